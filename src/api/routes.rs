//! The endpoints. Handlers parse and check input, call the store or the runner, and shape answers.

use super::openapi::{
    Ack, ApiDoc, DanglingList, ExportQuery, FindingDetail, FindingPage, FindingQuery,
    NewSuppression, Notification, NotificationPage, NotificationQuery, PageQuery, ProblemBody,
    ScanPage, ScanStarted, Status, SuppressionList, SuppressionView, TenantQuery,
};
use super::{AppState, Params, Problem, authorize, decode_cursor, encode_cursor};
use crate::domain::Trigger;
use crate::domain::{IdentityType, ObjectId, Reason, TenantId, Verdict};
use crate::export;
use crate::lifecycle::{AckRefused, State};
use crate::output::JsonArray;
use crate::scheduler::Busy;
use crate::store::ScanRecord;
use crate::store::{Acknowledged, FindingFilter};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State as S};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, TryStreamExt};
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes, each registered with its OpenAPI description, and the document they make.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(list_findings))
        .routes(routes!(one_finding))
        .routes(routes!(acknowledge))
        .routes(routes!(list_scans, start_scan))
        .routes(routes!(one_scan))
        .routes(routes!(export_findings))
        .routes(routes!(list_notifications))
        .routes(routes!(list_dangling))
        .routes(routes!(list_suppressions, add_suppression))
        .routes(routes!(delete_suppression))
        .split_for_parts()
}

/// The API's OpenAPI document, made once when the router is built.
static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Keeps the document to serve (the first router built in a process sets it; every router is built
/// from the same routes, so every document is the same).
pub fn keep_document(doc: utoipa::openapi::OpenApi) {
    DOCUMENT.get_or_init(|| super::openapi::document(doc));
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    summary = "This document (OpenAPI 3.1)",
    responses(
        (status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json"),
    )
)]
async fn openapi_json() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.get().cloned().unwrap_or_else(|| "{}".to_owned()),
    )
        .into_response()
}

/// Role assignments whose service principal no longer exists, as the latest scan that could judge
/// them saw them; `tenant_id=` narrows it.
#[utoipa::path(
    get,
    path = "/api/v1/dangling-role-assignments",
    tag = "findings",
    summary = "Role assignments whose service principal no longer exists",
    params(TenantQuery),
    responses(
        (status = 200, description = "The assignments", body = DanglingList),
        (status = 400, description = "A query parameter or the body is not valid", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn list_dangling(S(st): S<AppState>, RawQuery(q): RawQuery) -> Result<Response, Problem> {
    let p = Params::of::<TenantQuery>(q.as_deref())?;
    let tenant: Option<TenantId> = id_param(&p, "tenant_id")?;
    let items = st
        .store
        .dangling_assignments(tenant.as_ref())
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    Ok(typed_ok(
        StatusCode::OK,
        &DanglingList {
            items,
            next_cursor: None,
        },
    ))
}

/// Every suppression (allowlist entry), the configuration's (`source: config`) and the API's, with
/// whether it is in force now.
#[utoipa::path(
    get,
    path = "/api/v1/suppressions",
    tag = "suppressions",
    summary = "Every suppression (allowlist entry)",
    responses(
        (status = 200, description = "The suppressions", body = SuppressionList),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn list_suppressions(S(st): S<AppState>) -> Result<Response, Problem> {
    let now = chrono::Utc::now();
    let all = st
        .store
        .suppressions()
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    let items = all
        .into_iter()
        .map(|s| SuppressionView {
            active: s.active(now),
            suppression: s,
        })
        .collect();
    Ok(typed_ok(
        StatusCode::OK,
        &SuppressionList {
            items,
            next_cursor: None,
        },
    ))
}

/// Makes a suppression: `{"object_id" | "resource_id" | "subscription_id" | "tenant_id" (at least one),
/// "reason", "owner", "expires_at" (optional, RFC 3339 or a date)}`; 201 with it.
#[utoipa::path(
    post,
    path = "/api/v1/suppressions",
    tag = "suppressions",
    summary = "Makes a suppression",
    request_body = NewSuppression,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Made", body = SuppressionView),
        (status = 400, description = "A query parameter or the body is not valid", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Mutating endpoints are disabled: no API token is configured", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn add_suppression(
    S(st): S<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    authorize(&st, &headers)?;
    let n: NewSuppression = serde_json::from_slice(&body).map_err(|_| {
        Problem::bad_request(
            "body must be JSON: {\"object_id\" | \"resource_id\" | \"subscription_id\" | \"tenant_id\", \"reason\", \"owner\", \"expires_at\"}",
        )
    })?;
    let text = |v: Option<String>, name: &str| -> Result<Option<String>, Problem> {
        match v.map(|s| s.trim().to_owned()) {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) if s.chars().count() > 1024 || s.chars().any(char::is_control) => Err(
                Problem::bad_request(format!("{name} must be at most 1024 printable characters")),
            ),
            Some(s) => Ok(Some(s)),
        }
    };
    let lower = |v: Option<String>| v.map(|s| s.to_ascii_lowercase());
    let expires_at = match text(n.expires_at, "expires_at")? {
        None => None,
        Some(e) => Some(crate::config::parse_expiry(&e).ok_or_else(|| {
            Problem::bad_request("expires_at must be a date (2027-01-31) or an RFC 3339 time")
        })?),
    };
    let s = crate::domain::Suppression {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: lower(text(n.tenant_id, "tenant_id")?),
        subscription_id: lower(text(n.subscription_id, "subscription_id")?),
        object_id: lower(text(n.object_id, "object_id")?),
        resource_id: text(n.resource_id, "resource_id")?,
        reason: text(Some(n.reason), "reason")?.unwrap_or_default(),
        owner: text(Some(n.owner), "owner")?.unwrap_or_default(),
        expires_at,
        source: "api".into(),
    };
    if s.tenant_id.is_none()
        && s.subscription_id.is_none()
        && s.object_id.is_none()
        && s.resource_id.is_none()
    {
        return Err(Problem::bad_request(
            "a suppression needs at least one of object_id, resource_id, subscription_id, tenant_id",
        ));
    }
    if s.reason.is_empty() || s.owner.is_empty() {
        return Err(Problem::bad_request("reason and owner are required"));
    }
    if s.resource_id
        .as_deref()
        .is_some_and(|p| p.chars().all(|c| c == '*' || c == '/'))
    {
        return Err(Problem::bad_request(
            "resource_id must name something: a pattern of only '*' would suppress every orphan",
        ));
    }
    let now = chrono::Utc::now();
    st.store
        .add_suppression(&s, now)
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    tracing::info!(id = %s.id, owner = %s.owner, reason = %s.reason, tenant_id = ?s.tenant_id,
        subscription_id = ?s.subscription_id, object_id = ?s.object_id, resource_id = ?s.resource_id,
        expires_at = ?s.expires_at, "suppression added through the API");
    refresh_suppressed(&st).await?;
    Ok(typed_ok(
        StatusCode::CREATED,
        &SuppressionView {
            active: s.active(now),
            suppression: s,
        },
    ))
}

/// Deletes a suppression made through the API (204); one of the configuration is 409.
#[utoipa::path(
    delete,
    path = "/api/v1/suppressions/{id}",
    tag = "suppressions",
    summary = "Deletes a suppression made through the API",
    params(("id" = String, Path, description = "Suppression id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Mutating endpoints are disabled: no API token is configured", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No suppression with that id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The suppression is defined in the configuration", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn delete_suppression(
    S(st): S<AppState>,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id = path(p)?;
    authorize(&st, &headers)?;
    if id.starts_with("config-") {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "this suppression is defined in the configuration; remove it there",
        ));
    }
    let deleted = st
        .store
        .delete_suppression(&id)
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    if !deleted {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no suppression with that id",
        ));
    }
    refresh_suppressed(&st).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Applies the allowlist after a change through the API, and updates the gauges it moves.
async fn refresh_suppressed(st: &AppState) -> Result<(), Problem> {
    let applied = st
        .store
        .apply_suppressions(chrono::Utc::now())
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    crate::scheduler::log_suppressions(&applied);
    if !applied.reactivated_keys.is_empty() {
        st.runner.wake_notifier();
    }
    st.metrics
        .refresh_findings(&st.store, &st.tenants)
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))
}

/// The notification outbox, newest first: each delivery's sink (by name, never its URL), event, state,
/// attempts and last error. `state=pending|delivered|dead` narrows it.
#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    tag = "notifications",
    summary = "The notification outbox, newest first",
    params(NotificationQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = NotificationPage),
        (status = 400, description = "A query parameter or the body is not valid", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn list_notifications(
    S(st): S<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, Problem> {
    let p = Params::of::<NotificationQuery>(q.as_deref())?;
    let limit = p.limit()?;
    let state = match p.typed("state")? {
        None => None,
        Some(s @ ("pending" | "delivered" | "dead")) => Some(s),
        Some(_) => {
            return Err(Problem::bad_request(
                "state must be one of pending, delivered, dead".to_owned(),
            ));
        }
    };
    let after = match p.get("cursor") {
        Some(c) => Some(decode_cursor(c, 3)?),
        None => None,
    };
    let mut items = st
        .store
        .outbox_list(
            state,
            after
                .as_ref()
                .map(|v| (v[0].as_str(), v[1].as_str(), v[2].as_str())),
            limit + 1,
        )
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    let next = page(&mut items, limit, |r| {
        encode_cursor(&[&r.occurred_at, &r.sink, &r.event_id])
    });
    let items = items
        .into_iter()
        .map(|r| Notification {
            sink: r.sink,
            event_id: r.event_id,
            kind: r.kind,
            scan_id: r.scan_id,
            occurred_at: r.occurred_at,
            state: r.state,
            attempts: r.attempts,
            last_error: r.last_error,
            delivered_at: r.delivered_at,
        })
        .collect();
    Ok(typed_ok(
        StatusCode::OK,
        &NotificationPage {
            items,
            next_cursor: next,
        },
    ))
}

/// Cuts a list fetched with one extra item to `limit`, and gives the cursor of the next page when that
/// extra item showed there is one.
fn page<T>(items: &mut Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Option<String> {
    let limit = limit as usize;
    let more = items.len() > limit;
    items.truncate(limit);
    if more {
        items.last().map(cursor_of)
    } else {
        None
    }
}

/// A typed answer as JSON.
fn typed_ok<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not write the answer",
        )
        .into_response(),
    }
}

fn json_ok(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness: the process answers",
    responses(
        (status = 200, description = "Alive", body = Status),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn healthz() -> Response {
    json_ok(StatusCode::OK, &json!({"status": "ok"}))
}

/// Ready once the database answers and every migration is applied (not waiting for a first scan).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness: the database answers and every migration is applied",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "Not ready: the database is not reachable or not migrated", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn readyz(S(st): S<AppState>) -> Response {
    let applied: Result<i64, _> =
        sqlx::query_scalar("select count(*) from _sqlx_migrations where success = 1")
            .fetch_one(st.store.pool())
            .await;
    let expected = crate::store::MIGRATOR.iter().count() as i64;
    match applied {
        Ok(n) if n >= expected => json_ok(StatusCode::OK, &json!({"status": "ready"})),
        Ok(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database migrations are not applied",
        )
        .into_response(),
        Err(e) => {
            st.metrics.store_errors.inc();
            tracing::warn!(error = %e, "readiness check failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is not reachable",
            )
            .into_response()
        }
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics (text exposition format 0.0.4)",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn metrics(S(st): S<AppState>) -> Response {
    st.metrics.sync_azure(st.runner.counters());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

const STATES: &str = "suspected, confirmed, acknowledged, resolved, unverified, suppressed";
const VERDICTS: &str = "healthy, orphaned, unknown";

fn states_param(p: &Params) -> Result<Vec<State>, Problem> {
    match p.get("state") {
        None => Ok(Vec::new()),
        Some(v) => v
            .split(',')
            .map(|s| {
                State::parse(s.trim()).ok_or_else(|| {
                    Problem::bad_request(format!("state must be one of {STATES} (comma-separated)"))
                })
            })
            .collect(),
    }
}

/// An id parameter (tenant, subscription), in its id type (which lower-cases it).
fn id_param<T: for<'a> From<&'a str>>(p: &Params, k: &str) -> Result<Option<T>, Problem> {
    match p.get(k) {
        None => Ok(None),
        Some(v)
            if v.len() <= 256
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) =>
        {
            Ok(Some(T::from(v)))
        }
        Some(_) => Err(Problem::bad_request(format!("{k} is not a valid id"))),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/findings",
    tag = "findings",
    summary = "Findings, by tenant and object id",
    params(FindingQuery),
    responses(
        (status = 200, description = "A page of findings", body = FindingPage),
        (status = 400, description = "A query parameter or the body is not valid", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn list_findings(S(st): S<AppState>, RawQuery(q): RawQuery) -> Result<Response, Problem> {
    let p = Params::of::<FindingQuery>(q.as_deref())?;
    let limit = p.limit()?;
    let awaiting_ticket = match p.typed("awaiting_ticket")? {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(Problem::bad_request(
                "awaiting_ticket must be true or false",
            ));
        }
    };
    let filter = FindingFilter {
        awaiting_ticket,
        states: states_param(&p)?,
        verdict: p.one_of("verdict", Verdict::parse, VERDICTS)?,
        reason: p.one_of(
            "reason",
            Reason::parse,
            "a reason code such as resource_not_found",
        )?,
        tenant_id: id_param(&p, "tenant_id")?,
        identity_type: p.one_of(
            "identity_type",
            IdentityType::parse,
            "system_assigned, user_assigned",
        )?,
        subscription_id: id_param(&p, "subscription_id")?,
        resource_type: match p.get("resource_type") {
            Some(t) if crate::arm::is_queryable_type(t) => Some(t.to_ascii_lowercase()),
            Some(_) => {
                return Err(Problem::bad_request(
                    "resource_type must look like microsoft.compute/virtualmachines",
                ));
            }
            None => None,
        },
    };
    let after = match p.get("cursor") {
        Some(c) => {
            let v = decode_cursor(c, 2)?;
            Some((TenantId::from(v[0].as_str()), ObjectId::from(v[1].as_str())))
        }
        None => None,
    };
    let body = findings_page(&st, &filter, after.as_ref(), limit)
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// A page of the findings list, `{"items": [...], "next_cursor": ...}`, each finding written into the
/// body as it is read (no list of findings, no JSON tree of the page). One more than asked is read,
/// to tell whether another page exists. The body is sent once whole: a page is at most 1,000 findings,
/// and the read is over before a slow client is served.
async fn findings_page(
    st: &AppState,
    filter: &FindingFilter,
    after: Option<&crate::store::FindingCursor>,
    limit: u32,
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let mut body = b"{\"items\":".to_vec();
    let mut items = JsonArray::compact();
    items.open(&mut body)?;
    let mut rows = st.store.stream_findings(filter, after, limit + 1);
    let (mut last, mut more) = (None, false);
    while let Some(f) = rows.try_next().await? {
        if items.len() == u64::from(limit) {
            more = true;
            break;
        }
        // Through a JSON value, as pages always were: the fields in name order.
        items.push(&mut body, &serde_json::to_value(&f)?)?;
        last = Some(f.finding);
    }
    items.close(&mut body)?;
    let next = last
        .filter(|_| more)
        .map(|f| encode_cursor(&[f.tenant_id.as_str(), f.object_id.as_str()]));
    body.extend_from_slice(b",\"next_cursor\":");
    serde_json::to_writer(&mut body, &next)?;
    body.push(b'}');
    Ok(body)
}

/// Path parameters, with axum's own rejection (e.g. a segment that is not UTF-8) turned into a problem.
fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, Problem> {
    p.map(|Path(v)| v)
        .map_err(|_| Problem::new(StatusCode::NOT_FOUND, "no such resource"))
}

fn check_path_id(v: &str, what: &str) -> Result<(), Problem> {
    if v.is_empty()
        || v.len() > 256
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("no finding with that {what}"),
        ));
    }
    Ok(())
}

/// The tenant and object ids of a finding's path, checked.
fn finding_ids((tenant, object): (String, String)) -> Result<(TenantId, ObjectId), Problem> {
    check_path_id(&tenant, "tenant id")?;
    check_path_id(&object, "object id")?;
    Ok((TenantId::from(tenant), ObjectId::from(object)))
}

async fn finding_with_history(
    st: &AppState,
    tenant: &TenantId,
    object: &ObjectId,
) -> Result<Option<FindingDetail>, Problem> {
    let Some(mut f) = st
        .store
        .load_finding(tenant, object)
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?
    else {
        return Ok(None);
    };
    let history = st
        .store
        .load_history(tenant, object)
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    let roles = st
        .store
        .role_assignments(tenant, object)
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    f.high_risk = roles.iter().any(|a| a.privileged);
    Ok(Some(FindingDetail {
        finding: f,
        history,
        role_assignments: roles,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/findings/{tenant_id}/{object_id}",
    tag = "findings",
    summary = "One finding with its history and role assignments",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("object_id" = String, Path, description = "Object id of the service principal")),
    responses(
        (status = 200, description = "The finding", body = FindingDetail),
        (status = 404, description = "No finding for that tenant and object id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn one_finding(
    S(st): S<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    let (tenant, object) = finding_ids(path(p)?)?;
    match finding_with_history(&st, &tenant, &object).await? {
        Some(v) => Ok(typed_ok(StatusCode::OK, &v)),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no finding for that tenant and object id",
        )),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/findings/{tenant_id}/{object_id}/acknowledge",
    tag = "findings",
    summary = "Acknowledges an open orphan with the support case that will remove it",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("object_id" = String, Path, description = "Object id of the service principal")),
    request_body = Ack,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Acknowledged; the finding", body = FindingDetail),
        (status = 400, description = "A query parameter or the body is not valid", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Mutating endpoints are disabled: no API token is configured", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No finding for that tenant and object id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The finding is not suspected or confirmed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn acknowledge(
    S(st): S<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let ids = path(p)?;
    authorize(&st, &headers)?;
    let (tenant, object) = finding_ids(ids)?;
    let ack: Ack = serde_json::from_slice(&body).map_err(|_| {
        Problem::bad_request(
            "body must be JSON: {\"ticket\": \"support case number\", \"note\": \"optional text\"}",
        )
    })?;
    let ticket = ack.ticket.trim().to_owned();
    if ticket.is_empty() || ticket.chars().count() > 128 || ticket.chars().any(char::is_control) {
        return Err(Problem::bad_request(
            "ticket must be 1 to 128 printable characters",
        ));
    }
    if ack.note.as_ref().is_some_and(|n| n.chars().count() > 4096) {
        return Err(Problem::bad_request("note must be at most 4096 characters"));
    }
    let done = st
        .store
        .acknowledge(&tenant, &object, ticket, ack.note, chrono::Utc::now())
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    match done {
        Acknowledged::Done(_) => {
            st.metrics
                .refresh_findings(&st.store, &st.tenants)
                .await
                .map_err(|e| Problem::internal(&st.metrics, &e))?;
            match finding_with_history(&st, &tenant, &object).await? {
                Some(v) => Ok(typed_ok(StatusCode::OK, &v)),
                None => Err(Problem::new(
                    StatusCode::NOT_FOUND,
                    "no finding for that tenant and object id",
                )),
            }
        }
        Acknowledged::NotFound => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no finding for that tenant and object id",
        )),
        Acknowledged::Refused(AckRefused::NotOpen(state)) => Err(Problem::new(
            StatusCode::CONFLICT,
            format!(
                "only suspected or confirmed findings can be acknowledged; this one is {}",
                state.map_or("not a finding", State::as_str)
            ),
        )),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/scans",
    tag = "scans",
    summary = "Scans, newest first",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of scans", body = ScanPage),
        (status = 400, description = "A query parameter or the body is not valid", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn list_scans(S(st): S<AppState>, RawQuery(q): RawQuery) -> Result<Response, Problem> {
    let p = Params::of::<PageQuery>(q.as_deref())?;
    let limit = p.limit()?;
    let before = match p.get("cursor") {
        Some(c) => Some(decode_cursor(c, 2)?),
        None => None,
    };
    let mut items = st
        .store
        .list_scans(
            limit + 1,
            before.as_ref().map(|v| (v[0].as_str(), v[1].as_str())),
        )
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    let next = page(&mut items, limit, |s| {
        encode_cursor(&[&s.started_at.to_rfc3339(), &s.scan_id])
    });
    Ok(typed_ok(
        StatusCode::OK,
        &ScanPage {
            items,
            next_cursor: next,
        },
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/scans/{scan_id}",
    tag = "scans",
    summary = "One scan",
    params(("scan_id" = String, Path, description = "Scan id")),
    responses(
        (status = 200, description = "The scan", body = ScanRecord),
        (status = 404, description = "No scan with that id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn one_scan(
    S(st): S<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let id = path(p)?;
    if id.len() > 64 {
        return Err(Problem::new(StatusCode::NOT_FOUND, "no scan with that id"));
    }
    match st
        .store
        .load_scan(&id)
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?
    {
        Some(r) => Ok(typed_ok(StatusCode::OK, &r)),
        None => Err(Problem::new(StatusCode::NOT_FOUND, "no scan with that id")),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/scans",
    tag = "scans",
    summary = "Starts a scan now",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Started", body = ScanStarted, headers(("Location" = String, description = "The scan"))),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Mutating endpoints are disabled: no API token is configured", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "A scan is already running", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Shutting down, or the request took too long", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn start_scan(S(st): S<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    authorize(&st, &headers)?;
    match st.runner.start(Trigger::Manual).await {
        Ok(id) => {
            let mut res = typed_ok(
                StatusCode::ACCEPTED,
                &ScanStarted {
                    href: format!("/api/v1/scans/{id}"),
                    scan_id: id.clone(),
                    status: "running".to_owned(),
                },
            );
            if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/scans/{id}")) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            Ok(res)
        }
        Err(Busy::AlreadyRunning) => Err(Problem::new(
            StatusCode::CONFLICT,
            "a scan is already running",
        )),
        Err(Busy::ShuttingDown) => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
        )),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/export",
    tag = "exports",
    summary = "The support-ticket list of open orphans",
    params(ExportQuery),
    responses(
        (status = 200, description = "The list: CSV, a JSON array, or the ticket text", content(
            (String = "text/csv; charset=utf-8"),
            (Vec<serde_json::Value> = "application/json"),
            (String = "text/plain; charset=utf-8"),
        )),
        (status = 400, description = "A query parameter or the body is not valid", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "The bearer token is missing or wrong (mutating endpoints; reads with `require_token_for_reads`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database is not available, or the request took too long; retry later", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn export_findings(S(st): S<AppState>, RawQuery(q): RawQuery) -> Result<Response, Problem> {
    let p = Params::of::<ExportQuery>(q.as_deref())?;
    let tenant: Option<TenantId> = id_param(&p, "tenant_id")?;
    let format = match p.get("format") {
        None | Some("csv") => export::Format::Csv,
        Some("json") => export::Format::Json,
        // A preview: reading it marks nothing (`miaudit export --format ticket` does).
        Some("ticket") => {
            let mut text = Vec::new();
            export::write_tickets(&st.store, tenant.as_ref(), false, &mut text)
                .await
                .map_err(|e| Problem::internal(&st.metrics, &e))?;
            return Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                text,
            )
                .into_response());
        }
        Some(_) => {
            return Err(Problem::bad_request("format must be csv, json or ticket"));
        }
    };
    let states = states_param(&p)?;
    let mut export = export::Export::new(tenant.as_ref(), &states, format);
    // The first page before the answer: a database that fails at once is a 503, not a broken body.
    let mut first = Vec::new();
    let more = export
        .write_next(&st.store, &mut first)
        .await
        .map_err(|e| Problem::internal(&st.metrics, &e))?;
    let body = if more {
        Body::from_stream(export_rest(st, export, first))
    } else {
        Body::from(first)
    };
    let (ctype, ext) = match format {
        export::Format::Csv => ("text/csv; charset=utf-8", "csv"),
        export::Format::Json => ("application/json", "json"),
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"miaudit-orphans.{ext}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// The body of an export longer than a page: `first`, then a page at a time, each written while the
/// client reads the previous ones (two pages ahead at most: memory stays a few pages whatever the
/// export's size, and a slow client holds no database snapshot, each page being one short read). A
/// failure after the first page can no longer change the status: the body is cut off (the client sees
/// an incomplete transfer, never a short document that looks whole), the error logged and counted.
fn export_rest(
    st: AppState,
    mut export: export::Export,
    first: Vec<u8>,
) -> futures::channel::mpsc::Receiver<Result<Bytes, std::io::Error>> {
    let (mut tx, rx) = futures::channel::mpsc::channel(1);
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(first))).await.is_err() {
            return;
        }
        loop {
            let mut page = Vec::new();
            let (part, more) = match export.write_next(&st.store, &mut page).await {
                Ok(more) => (Ok(Bytes::from(page)), more),
                Err(e) => {
                    Problem::internal(&st.metrics, &e);
                    (
                        Err(std::io::Error::other("the export was interrupted")),
                        false,
                    )
                }
            };
            // A client that went away ends the export.
            if tx.send(part).await.is_err() || !more {
                return;
            }
        }
    });
    rx
}
