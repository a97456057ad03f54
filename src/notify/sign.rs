//! The json sink's signature: `X-Miaudit-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`
//! with the webhook's secret, `X-Miaudit-Timestamp` the Unix seconds it was signed at. A receiver
//! recomputes it over the raw bytes it received, compares in constant time, and rejects a timestamp
//! older than its tolerance (README, "Verifying a delivery"), so a captured delivery cannot be replayed.

use aws_lc_rs::hmac;

/// The `X-Miaudit-Signature` value of `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex(ctx.sign().as_ref()))
}

/// Checks a received signature as a receiver should (constant-time comparison); for tests and for
/// anyone reading this as the reference.
pub fn verify(secret: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = unhex(hex_sig) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = timestamp.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    hmac::verify(&key, &msg, &tag).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_documented_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?", split here as
        // "<timestamp>.<body>" would not fit it, so the known answer is for the joined message.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let s = signature("Jefe", 1_700_000_000, b"{\"a\":1}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        assert!(verify("Jefe", 1_700_000_000, b"{\"a\":1}", &s));
        assert!(
            !verify("Jefe", 1_700_000_001, b"{\"a\":1}", &s),
            "another timestamp"
        );
        assert!(
            !verify("Jefe", 1_700_000_000, b"{\"a\":2}", &s),
            "another body"
        );
        assert!(
            !verify("jefe", 1_700_000_000, b"{\"a\":1}", &s),
            "another secret"
        );
        assert!(!verify("Jefe", 1_700_000_000, b"{\"a\":1}", "sha256=zz"));
    }
}
