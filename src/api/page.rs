//! Publish (HTTP): the read-only page at `/` for the people an alert wakes. Every open orphan
//! (suspected, confirmed, acknowledged) by tenant with its state, evidence and blast radius, filters,
//! and links to the exports. Server-rendered HTML with its style inline: no script, nothing from other
//! hosts (its Content-Security-Policy allows neither), readable without the API's JSON.
//!
//! Everything shown comes from Azure or an operator (display names, resource ids, error codes, ticket
//! numbers) and is escaped where it is written ([`Esc`]); nothing is written unescaped but this
//! module's own markup.

use super::{AppState, Params, Problem, decode_cursor, encode_cursor};
use crate::domain::{EvidenceSource, IdentityType, ObjectId, TenantId};
use crate::lifecycle::State;
use crate::store::{FindingFilter, ScanRecord, StoredFinding};
use axum::extract::{RawQuery, State as S};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use std::fmt::{self, Write as _};

/// Findings on one page; a "next page" link follows when there are more.
const PAGE_SIZE: u32 = 500;

/// The states the page can show: the open ones by default.
const STATE_CHOICES: [(&str, &str); 7] = [
    ("", "Open (suspected, confirmed, acknowledged)"),
    ("suspected", "Suspected"),
    ("confirmed", "Confirmed"),
    ("acknowledged", "Acknowledged"),
    ("suppressed", "Suppressed (allowlisted)"),
    ("resolved", "Resolved"),
    ("unverified", "Unverified"),
];

const OPEN: [State; 3] = [State::Suspected, State::Confirmed, State::Acknowledged];

/// Text written into HTML, escaped (element content and quoted attribute values alike).
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                // Control characters would only confuse a reader or a screen reader, and bidi
                // controls would let a name reorder the text around it.
                c if (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c) => {
                    f.write_str("\u{fffd}")?;
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Unicode's explicit directional formatting characters (embeddings, overrides, isolates, marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// Role assignments shown in a row; the rest are counted and in the finding's JSON.
const ROLES_SHOWN: usize = 10;

/// A time as people read it (to the second, UTC); only digits and punctuation, nothing to escape.
fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A query string value, percent-encoded.
fn q(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// The filters the page was asked for.
struct Filters {
    tenant: Option<TenantId>,
    state: String,
    identity_type: Option<IdentityType>,
    awaiting_ticket: bool,
}

impl Filters {
    fn parse(p: &Params) -> Result<Self, Problem> {
        let state = p.get("state").unwrap_or("").to_owned();
        if !STATE_CHOICES.iter().any(|(v, _)| *v == state) {
            return Err(Problem::bad_request(
                "state must be suspected, confirmed, acknowledged, suppressed, resolved or unverified",
            ));
        }
        let tenant = match p.get("tenant_id") {
            None => None,
            Some(t)
                if t.len() <= 256
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) =>
            {
                Some(TenantId::from(t))
            }
            Some(_) => return Err(Problem::bad_request("tenant_id is not a valid id")),
        };
        let identity_type = match p.get("identity_type") {
            None => None,
            Some(v) => Some(IdentityType::parse(v).ok_or_else(|| {
                Problem::bad_request("identity_type must be system_assigned or user_assigned")
            })?),
        };
        let awaiting_ticket = match p.get("awaiting_ticket") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(Problem::bad_request("awaiting_ticket must be true")),
        };
        Ok(Self {
            tenant,
            state,
            identity_type,
            awaiting_ticket,
        })
    }

    fn finding_filter(&self) -> FindingFilter {
        FindingFilter {
            states: match State::parse(&self.state) {
                Some(s) => vec![s],
                None => OPEN.to_vec(),
            },
            tenant_id: self.tenant.clone(),
            identity_type: self.identity_type,
            awaiting_ticket: self.awaiting_ticket,
            ..FindingFilter::default()
        }
    }

    /// The page's own query string for these filters (and a cursor).
    fn query(&self, cursor: Option<&str>) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.tenant {
            parts.push(format!("tenant_id={}", q(t.as_str())));
        }
        if !self.state.is_empty() {
            parts.push(format!("state={}", q(&self.state)));
        }
        if let Some(i) = self.identity_type {
            parts.push(format!("identity_type={}", i.as_str()));
        }
        if self.awaiting_ticket {
            parts.push("awaiting_ticket=true".to_owned());
        }
        if let Some(c) = cursor {
            parts.push(format!("cursor={}", q(c)));
        }
        parts.join("&amp;")
    }
}

pub async fn index(S(st): S<AppState>, RawQuery(raw): RawQuery) -> Result<Response, Problem> {
    let p = Params::parse(
        raw.as_deref(),
        &[
            "tenant_id",
            "state",
            "identity_type",
            "awaiting_ticket",
            "cursor",
        ],
    )?;
    let filters = Filters::parse(&p)?;
    let after = match p.get("cursor") {
        Some(c) => {
            let v = decode_cursor(c, 2)?;
            Some((TenantId::from(v[0].as_str()), ObjectId::from(v[1].as_str())))
        }
        None => None,
    };
    let internal = |e: &dyn fmt::Display| Problem::internal(&st.metrics, e);
    let scans = st
        .store
        .list_scans(10, None)
        .await
        .map_err(|e| internal(&e))?;
    let counts = st
        .store
        .count_findings_by_state()
        .await
        .map_err(|e| internal(&e))?;

    let heading = STATE_CHOICES
        .iter()
        .find(|(v, _)| *v == filters.state)
        .map_or("Findings", |(_, l)| l);
    let mut html = String::with_capacity(64 * 1024);
    head(&mut html, heading, filters.tenant.as_ref());
    let _ = write!(
        html,
        "<body>\n<a class=\"skip\" href=\"#findings\">Skip to the findings</a>\n<header>\n<h1>miaudit</h1>\n\
<p>Orphaned managed identities: service principals whose Azure resource is gone or carries another \
identity. Only Microsoft support can delete them; this page lists what to hand over.</p>\n</header>\n<main>\n"
    );
    scan_status(&mut html, &scans);
    summary(&mut html, &st.tenants, &counts);
    filter_form(&mut html, &st.tenants, &filters);
    exports(&mut html, &filters);

    let _ = write!(
        html,
        "<section id=\"findings\" aria-labelledby=\"findings-h\" tabindex=\"-1\">\n<h2 id=\"findings-h\">{}</h2>\n",
        Esc(heading)
    );
    let filter = filters.finding_filter();
    let mut rows = st
        .store
        .stream_findings(&filter, after.as_ref(), PAGE_SIZE + 1);
    let (mut shown, mut more, mut last) = (0u32, false, None);
    let mut tenant: Option<TenantId> = None;
    while let Some(f) = rows.try_next().await.map_err(|e| internal(&e))? {
        if shown == PAGE_SIZE {
            more = true;
            break;
        }
        if tenant.as_ref() != Some(&f.finding.tenant_id) {
            if tenant.is_some() {
                html.push_str("</tbody>\n</table>\n</div>\n");
            }
            tenant = Some(f.finding.tenant_id.clone());
            table_start(&mut html, &f.finding.tenant_id);
        }
        row(&mut html, &f);
        shown += 1;
        last = Some((f.finding.tenant_id.clone(), f.finding.object_id.clone()));
    }
    drop(rows);
    if tenant.is_some() {
        html.push_str("</tbody>\n</table>\n</div>\n");
    } else {
        html.push_str("<p class=\"empty\">No finding matches these filters.");
        if scans.iter().all(|s| s.finished_at.is_none()) {
            html.push_str(
                " No scan has finished yet, so this is <strong>not</strong> an all-clear.",
            );
        } else if not_all_clear(&scans) {
            html.push_str(
                " The last scan was incomplete or a newer one did not finish, so this is \
<strong>not</strong> an all-clear.",
            );
        }
        html.push_str("</p>\n");
    }
    if let Some((t, o)) = last.filter(|_| more) {
        let cursor = encode_cursor(&[t.as_str(), o.as_str()]);
        let _ = writeln!(
            html,
            "<nav aria-label=\"Pages\"><a href=\"/?{}\">Next {PAGE_SIZE} findings</a></nav>",
            filters.query(Some(&cursor))
        );
    }
    html.push_str("</section>\n</main>\n<footer><p>miaudit ");
    let _ = write!(html, "{}", Esc(crate::VERSION));
    html.push_str(
        " · <a href=\"/api/v1/openapi.json\">API (OpenAPI)</a> · <a href=\"/metrics\">metrics</a></p></footer>\n</body>\n</html>\n",
    );
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response())
}

/// The document's head; the title says what the page shows (filters change it).
fn head(html: &mut String, heading: &str, tenant: Option<&TenantId>) {
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>{}{}{} - miaudit</title>\n",
        Esc(heading),
        if tenant.is_some() { ", tenant " } else { "" },
        Esc(tenant.map_or("", TenantId::as_str)),
    );
    html.push_str(concat!(
        "<style>\n",
        // Colours meet WCAG AA contrast on white (text #1b1b1b, links #0b4f9c, badges' text on tints).
        "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1b1b;background:#fff;margin:0 1.5rem 2rem;line-height:1.45}\n",
        "a{color:#0b4f9c}a:focus-visible,button:focus-visible,select:focus-visible,input:focus-visible,[tabindex]:focus-visible{outline:3px solid #b35900;outline-offset:2px}\n",
        ".skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem;z-index:1}\n",
        "h1{margin:.8rem 0 .2rem}h2{margin-top:1.6rem;border-bottom:1px solid #ccc}\n",
        "table{border-collapse:collapse;width:100%;font-size:.9rem}caption{text-align:left;font-weight:600;padding:.4rem 0}\n",
        "th,td{border:1px solid #bbb;padding:.35rem .5rem;vertical-align:top;text-align:left}th{background:#eef1f5}\n",
        ".wrap{overflow-x:auto}code{font-size:.85em;word-break:break-all}\n",
        ".badge{display:inline-block;padding:0 .4rem;border-radius:.3rem;font-weight:600}\n",
        ".s-suspected{background:#fff1c2;color:#4d3800}.s-confirmed{background:#ffd9d6;color:#7a0d05}",
        ".s-acknowledged{background:#dcecff;color:#0b3d75}.s-suppressed{background:#e6e6e6;color:#333}",
        ".s-resolved,.s-unverified{background:#dff3e2;color:#0f4d1c}.risk{background:#7a0d05;color:#fff}\n",
        ".warn{border-left:.4rem solid #b35900;background:#fff4e5;padding:.5rem .8rem}\n",
        "form{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-end}label{display:block;font-weight:600}\n",
        "select,button{font-size:1rem;padding:.25rem}.empty{font-style:italic}\n",
        "</style>\n</head>\n"
    ));
}

/// Whether the page may not be read as complete: no scan finished, the last finished one was
/// incomplete, or a newer one was abandoned (timed out, or the process stopped during it).
fn not_all_clear(scans: &[ScanRecord]) -> bool {
    match scans.iter().position(|s| s.finished_at.is_some()) {
        None => true,
        Some(i) => !scans[i].complete || scans[..i].iter().any(|s| s.outcome == "abandoned"),
    }
}

fn scan_status(html: &mut String, scans: &[ScanRecord]) {
    html.push_str("<section aria-labelledby=\"scan-h\">\n<h2 id=\"scan-h\">Last scan</h2>\n");
    let running = scans.first().filter(|s| s.outcome == "running");
    let abandoned = scans
        .iter()
        .take_while(|s| s.finished_at.is_none())
        .filter(|s| s.outcome == "abandoned")
        .count();
    match scans.iter().find(|s| s.finished_at.is_some()) {
        None => html.push_str(
            "<p class=\"warn\" role=\"status\">No scan has finished yet: nothing below is an all-clear.</p>\n",
        ),
        Some(s) => {
            let _ = writeln!(
                html,
                "<p>Finished <time datetime=\"{at}\">{f}</time> ({outcome}): {total} identities, {o} orphaned, {u} unknown.</p>",
                at = s.finished_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                f = s.finished_at.map(when).unwrap_or_default(),
                outcome = Esc(&s.outcome),
                total = s.summary.total,
                o = s.summary.orphaned,
                u = s.summary.unknown,
            );
            if !s.complete {
                html.push_str(
                    "<p class=\"warn\" role=\"status\">That scan was incomplete: some identities could not be judged \
(unknown) and some orphans may be missing below. It is not an all-clear.</p>\n",
                );
            }
        }
    }
    if abandoned > 0 {
        let _ = writeln!(
            html,
            "<p class=\"warn\" role=\"status\">{abandoned} newer scan(s) did not finish (abandoned: timed out or \
stopped): what follows is as of the last finished scan, not an all-clear.</p>"
        );
    }
    if let Some(r) = running {
        let _ = writeln!(
            html,
            "<p>A scan is running since {}.</p>",
            when(r.started_at)
        );
    }
    html.push_str("</section>\n");
}

fn summary(html: &mut String, tenants: &[TenantId], counts: &[(TenantId, Option<State>, u64)]) {
    html.push_str("<section aria-labelledby=\"sum-h\">\n<h2 id=\"sum-h\">Findings by tenant</h2>\n<div class=\"wrap\"><table>\n<caption>Findings per state and tenant</caption>\n<thead><tr><th scope=\"col\">Tenant</th>");
    let states = [
        State::Suspected,
        State::Confirmed,
        State::Acknowledged,
        State::Suppressed,
        State::Resolved,
        State::Unverified,
    ];
    for s in states {
        let _ = write!(html, "<th scope=\"col\">{}</th>", s.as_str());
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    let mut all: Vec<&TenantId> = tenants.iter().collect();
    for (t, _, _) in counts {
        if !all.contains(&t) {
            all.push(t);
        }
    }
    for t in all {
        let _ = write!(
            html,
            "<tr><th scope=\"row\"><a href=\"/?tenant_id={}\"><code>{}</code></a></th>",
            q(t.as_str()),
            Esc(t.as_str())
        );
        for s in states {
            let n: u64 = counts
                .iter()
                .filter(|(ct, cs, _)| ct == t && *cs == Some(s))
                .map(|(_, _, n)| n)
                .sum();
            let _ = write!(html, "<td>{n}</td>");
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table></div>\n</section>\n");
}

fn filter_form(html: &mut String, tenants: &[TenantId], f: &Filters) {
    html.push_str("<section aria-labelledby=\"filter-h\">\n<h2 id=\"filter-h\">Filters</h2>\n<form method=\"get\" action=\"/\">\n");
    html.push_str("<div><label for=\"f-tenant\">Tenant</label><select id=\"f-tenant\" name=\"tenant_id\"><option value=\"\">All tenants</option>");
    let mut listed: Vec<&TenantId> = tenants.iter().collect();
    if let Some(t) = &f.tenant
        && !listed.contains(&t)
    {
        listed.push(t);
    }
    for t in listed {
        let sel = if f.tenant.as_ref() == Some(t) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            html,
            "<option value=\"{v}\"{sel}>{v}</option>",
            v = Esc(t.as_str())
        );
    }
    html.push_str("</select></div>\n<div><label for=\"f-state\">State</label><select id=\"f-state\" name=\"state\">");
    for (v, label) in STATE_CHOICES {
        let sel = if f.state == v { " selected" } else { "" };
        let _ = write!(html, "<option value=\"{v}\"{sel}>{label}</option>");
    }
    html.push_str("</select></div>\n<div><label for=\"f-type\">Identity type</label><select id=\"f-type\" name=\"identity_type\"><option value=\"\">Both</option>");
    for t in [IdentityType::SystemAssigned, IdentityType::UserAssigned] {
        let sel = if f.identity_type == Some(t) {
            " selected"
        } else {
            ""
        };
        let label = match t {
            IdentityType::SystemAssigned => "System-assigned",
            IdentityType::UserAssigned => "User-assigned",
        };
        let _ = write!(
            html,
            "<option value=\"{}\"{sel}>{label}</option>",
            t.as_str()
        );
    }
    let checked = if f.awaiting_ticket { " checked" } else { "" };
    let _ = write!(
        html,
        "</select></div>\n<div><input type=\"checkbox\" id=\"f-await\" name=\"awaiting_ticket\" value=\"true\"{checked}> \
<label for=\"f-await\" style=\"display:inline\">Only confirmed orphans awaiting a ticket</label></div>\n\
<div><button type=\"submit\">Apply filters</button></div>\n</form>\n</section>\n"
    );
}

fn exports(html: &mut String, f: &Filters) {
    let tenant = f
        .tenant
        .as_ref()
        .map(|t| format!("&amp;tenant_id={}", q(t.as_str())))
        .unwrap_or_default();
    let _ = write!(
        html,
        "<section aria-labelledby=\"exp-h\">\n<h2 id=\"exp-h\">Exports for a support ticket</h2>\n<ul>\n\
<li><a href=\"/api/v1/export?format=csv{tenant}\">Open orphans as CSV</a></li>\n\
<li><a href=\"/api/v1/export?format=json{tenant}\">Open orphans as JSON</a></li>\n\
<li><a href=\"/api/v1/export?format=ticket{tenant}\">Ticket text (preview; <code>miaudit export --format ticket</code> marks them exported)</a></li>\n\
<li><a href=\"/api/v1/dangling-role-assignments\">Dangling role assignments (JSON)</a></li>\n</ul>\n</section>\n"
    );
}

fn table_start(html: &mut String, tenant: &TenantId) {
    let _ = write!(
        html,
        "<h3>Tenant <code>{t}</code></h3>\n<div class=\"wrap\"><table>\n<caption>Findings of tenant {t}</caption>\n<thead><tr>\
<th scope=\"col\">Identity</th><th scope=\"col\">Resource</th><th scope=\"col\">State</th>\
<th scope=\"col\">Evidence</th><th scope=\"col\">Blast radius</th></tr></thead>\n<tbody>\n",
        t = Esc(tenant.as_str())
    );
}

fn row(html: &mut String, f: &StoredFinding) {
    let d = &f.finding;
    let state = f.state.map_or("none", State::as_str);
    let kind = match d.identity_type {
        IdentityType::SystemAssigned => "system-assigned",
        IdentityType::UserAssigned => "user-assigned",
    };
    let _ = write!(
        html,
        "<tr>\n<td><strong>{name}</strong><br>{kind}<br>object <code>{oid}</code><br>app <code>{app}</code><br>\
<a href=\"/api/v1/findings/{qt}/{qo}\">JSON</a></td>\n",
        name = Esc(&d.display_name),
        oid = Esc(d.object_id.as_str()),
        app = Esc(&d.app_id),
        qt = q(d.tenant_id.as_str()),
        qo = q(d.object_id.as_str()),
    );
    let _ = write!(
        html,
        "<td><code>{}</code>",
        Esc(d.resource_id.as_deref().unwrap_or("(none named)"))
    );
    if let Some(t) = &d.resource_type {
        let _ = write!(html, "<br>type {}", Esc(t));
    }
    html.push_str("</td>\n");
    let _ = write!(
        html,
        "<td><span class=\"badge s-{state}\">{state}</span>",
        state = Esc(state)
    );
    if let (Some(by), Some(under)) = (&f.suppressed_by, f.lifecycle_state) {
        let _ = write!(
            html,
            "<br>by suppression <code>{}</code> (underneath: {})",
            Esc(by),
            under.as_str()
        );
    }
    if let Some(t) = f.first_detected_at {
        let _ = write!(html, "<br>first seen {}", when(t));
    }
    if let Some(t) = f.confirmed_at {
        let _ = write!(html, "<br>confirmed {}", when(t));
    }
    if let Some(t) = &f.ticket {
        let _ = write!(html, "<br>ticket <strong>{}</strong>", Esc(t));
    } else if f.awaiting_ticket {
        html.push_str("<br>awaiting a ticket");
    }
    html.push_str("</td>\n");
    let e = &d.evidence;
    let _ = write!(
        html,
        "<td>{reason}: {detail}<br>source {src}",
        reason = Esc(d.reason.as_str()),
        detail = Esc(&d.detail),
        src = match e.source {
            EvidenceSource::ResourceGraph => "Resource Graph",
            EvidenceSource::Arm => "ARM",
            EvidenceSource::None => "none",
        },
    );
    if let Some(s) = e.status {
        let _ = write!(html, ", HTTP {s}");
    }
    if let Some(c) = &e.code {
        let _ = write!(html, " <code>{}</code>", Esc(c));
    }
    if let Some(r) = &e.request_id {
        let _ = write!(html, "<br>request id <code>{}</code>", Esc(r));
    }
    if let Some(r) = &e.correlation_request_id {
        let _ = write!(html, "<br>correlation id <code>{}</code>", Esc(r));
    }
    if let Some(t) = e.checked_at {
        let _ = write!(html, "<br>checked {}", when(t));
    }
    html.push_str("</td>\n<td>");
    if f.high_risk {
        html.push_str("<span class=\"badge risk\">high risk</span><br>");
    }
    match f.role_summary.as_deref().filter(|s| !s.is_empty()) {
        Some(r) => {
            let all: Vec<&str> = r.split("; ").collect();
            for (i, a) in all.iter().take(ROLES_SHOWN).enumerate() {
                let _ = write!(html, "{}{}", if i > 0 { "<br>" } else { "" }, Esc(a));
            }
            if all.len() > ROLES_SHOWN {
                let _ = write!(
                    html,
                    "<br>and {} more (in the JSON)",
                    all.len() - ROLES_SHOWN
                );
            }
        }
        None => html.push_str("no role assignment known"),
    }
    html.push_str("</td>\n</tr>\n");
}

#[cfg(test)]
mod tests {
    use super::Esc;

    #[test]
    fn escaping_leaves_no_markup() {
        let s = Esc("<script>alert('x')</script> & \"q\" \u{7}\u{202e}gpj.exe\u{2066}").to_string();
        assert_eq!(
            s,
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot; \u{fffd}\u{fffd}gpj.exe\u{fffd}"
        );
    }
}
