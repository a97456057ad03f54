//! The JWT client assertion of the certificate credential (CERT; docs/azure-behaviour.md §6a): signed
//! with the application's private key, its header naming the certificate by thumbprint.
//!
//! - header: `alg` PS256 (what Microsoft's current page asks for), `typ` JWT, `x5t#S256` (base64url
//!   SHA-256 of the DER certificate) and `x5t` (base64url SHA-1), which the older page and the SDKs
//!   still send, so either reading of the protocol finds its thumbprint; with `send_certificate_chain`,
//!   `x5c` (the chain, standard base64 DER, the application's certificate first) for subject name /
//!   issuer authentication;
//! - claims: `aud` the token endpoint, `iss` = `sub` the client id, a fresh `jti` (a GUID) for every
//!   assertion, `nbf` and `iat` now, `exp` ten minutes later (the page's upper bound).

use crate::config::ClientCertificate;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha1::Digest as _;

/// How long an assertion is valid.
const LIFETIME_SECS: i64 = 600;

#[derive(serde::Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// A signer for one certificate: its key parsed once, its thumbprints computed once.
pub struct Signer {
    key: jsonwebtoken::EncodingKey,
    x5t: String,
    x5t_s256: String,
    x5c: Option<Vec<String>>,
}

impl Signer {
    pub fn new(cert: &ClientCertificate, send_chain: bool) -> Result<Self, String> {
        let leaf = cert
            .chain
            .first()
            .ok_or_else(|| "the certificate file holds no certificate".to_owned())?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(cert.key_pem.expose().as_bytes())
            .map_err(|_| "the private key is not an RSA key miaudit can sign with".to_owned())?;
        Ok(Self {
            key,
            x5t: URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(leaf)),
            x5t_s256: URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(leaf)),
            x5c: send_chain.then(|| cert.chain.iter().map(|c| STANDARD.encode(c)).collect()),
        })
    }

    /// A new assertion for `client_id` at the token endpoint `audience`.
    pub fn assertion(&self, client_id: &str, audience: &str) -> Result<String, String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
        header.typ = Some("JWT".into());
        header.x5t = Some(self.x5t.clone());
        header.x5t_s256 = Some(self.x5t_s256.clone());
        header.x5c.clone_from(&self.x5c);
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            aud: audience,
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| format!("signing the client assertion failed: {e}"))
    }

    #[cfg(test)]
    pub fn thumbprints(&self) -> (&str, &str) {
        (&self.x5t, &self.x5t_s256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/auth/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture")
    }

    fn cert() -> ClientCertificate {
        let der = pem::parse(fixture("app-cert.pem")).expect("pem");
        ClientCertificate {
            chain: vec![der.contents().to_vec()],
            key_pem: Secret::new(fixture("app-key.pem")),
        }
    }

    fn decode(jwt: &str) -> (serde_json::Value, serde_json::Value) {
        let mut parts = jwt.split('.');
        let mut part = || {
            serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(parts.next().expect("part"))
                    .expect("b64"),
            )
            .expect("json")
        };
        (part(), part())
    }

    #[test]
    fn the_assertion_has_the_documented_header_and_claims_and_verifies() {
        let signer = Signer::new(&cert(), false).expect("signer");
        let aud = "https://login.microsoftonline.com/t/oauth2/v2.0/token";
        let jwt = signer.assertion("client", aud).expect("signed");
        let (header, claims) = decode(&jwt);
        let (x5t, s256) = signer.thumbprints();
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["x5t"], x5t);
        assert_eq!(header["x5t#S256"], s256);
        assert_eq!(s256.len(), 43, "base64url of 32 bytes, unpadded");
        assert!(header.get("x5c").is_none(), "no chain unless asked");
        assert_eq!(claims["aud"], aud);
        assert_eq!(
            (claims["iss"].clone(), claims["sub"].clone()),
            ("client".into(), "client".into())
        );
        let (nbf, exp) = (
            claims["nbf"].as_i64().expect("nbf"),
            claims["exp"].as_i64().expect("exp"),
        );
        assert!(exp > nbf && exp - nbf <= 600);
        // The signature verifies with the certificate's public key.
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(fixture("app-public.pem").as_bytes())
            .expect("key");
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::PS256);
        v.set_audience(&[aud]);
        jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &v).expect("verifies");
        // Every assertion has its own jti.
        let again = decode(&signer.assertion("client", aud).expect("signed")).1;
        assert_ne!(claims["jti"], again["jti"]);
    }

    #[test]
    fn the_chain_is_sent_only_when_asked() {
        let signer = Signer::new(&cert(), true).expect("signer");
        let (header, _) = decode(&signer.assertion("c", "a").expect("signed"));
        let x5c = header["x5c"].as_array().expect("x5c");
        assert_eq!(x5c.len(), 1);
        let der = STANDARD
            .decode(x5c[0].as_str().expect("text"))
            .expect("base64");
        assert_eq!(der, cert().chain[0]);
    }
}
