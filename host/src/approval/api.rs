//! The approvers' side of the admin listener: the JSON API under `/api/approvals` (every call
//! authenticated with a bearer token from the approvals identity provider) and the page at
//! `/approvals` that drives it.
//!
//! - `GET /api/approvals?status=pending|approved|denied|expired|all` → `{"approvals": [View]}`
//! - `GET /api/approvals/{id}` → `View` with `grants` and `notifications`
//! - `POST /api/approvals/{id}/approve` `{"reason"?, "scope"?: {"operation", "window"}}` → `View`
//! - `POST /api/approvals/{id}/deny` `{"reason"}` → `View`
//!
//! A `View` is the stored request plus `can_decide` for the caller. A caller sees only the
//! requests it made and those it is an approver of. Errors are
//! `{"error": {"code", "message"}}`; [`reject`] is the one place they are made.
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::{Value, json};

use super::{Approvals, DecideError, Status, StoreError, Verdict};
use crate::auth::AuthError;
use crate::gateway::Gateway;
use crate::plugin::Principal;
use crate::proxy::{Body, full};
use crate::server::json;

/// The largest decision body accepted.
const BODY_LIMIT: usize = 16 * 1024;

/// Most requests one list returns.
const LIST_LIMIT: usize = 500;

const PAGE_HTML: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");

/// The page may run its own script and call this listener; nothing else.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                        connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                        form-action 'none'";

/// Whether a path belongs to this module.
pub fn serves(path: &str) -> bool {
    path == "/approvals"
        || path.starts_with("/approvals/")
        || path == "/api/approvals"
        || path.starts_with("/api/approvals/")
}

/// A refusal of the API.
#[derive(Debug)]
enum ApiError {
    Auth(AuthError),
    Decide(DecideError),
    NotFound(String),
    BadRequest(String),
    MethodNotAllowed,
    Disabled,
    Unavailable(String),
}

/// Serve one request of the approvers' API or page.
pub async fn handle<B>(gateway: &Gateway, request: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::proxy::BodyError>,
{
    let path = request.uri().path().to_string();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/approvals" | "/approvals/") => page("text/html; charset=utf-8", PAGE_HTML),
        (&Method::GET, "/approvals/page.js") => page("text/javascript; charset=utf-8", PAGE_JS),
        (&Method::GET, "/approvals/page.css") => page("text/css; charset=utf-8", PAGE_CSS),
        _ if path.starts_with("/api/") => match api(gateway, request).await {
            Ok(response) => response,
            Err(e) => reject(&e),
        },
        _ => reject(&ApiError::NotFound("no such page".into())),
    }
}

async fn api<B>(gateway: &Gateway, request: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::proxy::BodyError>,
{
    let approvals = gateway.approvals.as_ref().ok_or(ApiError::Disabled)?;
    let caller = gateway
        .identity
        .authenticate_with(approvals.provider(), request.headers())
        .await
        .map_err(ApiError::Auth)?;
    let path = request.uri().path().trim_end_matches('/').to_string();
    let rest: Vec<&str> = path
        .strip_prefix("/api/approvals")
        .unwrap_or_default()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (request.method().clone(), rest.as_slice()) {
        (Method::GET, []) => {
            let status = query_status(request.uri().query())?;
            let list = approvals
                .list(status, LIST_LIMIT)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?;
            let views: Vec<Value> = list
                .iter()
                .filter(|r| visible(r, &caller))
                .map(|r| view(r, &caller))
                .collect();
            Ok(json(StatusCode::OK, &json!({"approvals": views})))
        }
        (Method::GET, [id]) => {
            let (request, grants, notifications) = approvals
                .show(id)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?
                .filter(|(r, _, _)| visible(r, &caller))
                .ok_or_else(|| ApiError::NotFound(format!("no approval request {id}")))?;
            let mut shown = view(&request, &caller);
            shown["grants"] = json!(grants);
            shown["notifications"] = json!(notifications);
            Ok(json(StatusCode::OK, &shown))
        }
        (Method::POST, [id, action @ ("approve" | "deny")]) => {
            let id = id.to_string();
            let approve = *action == "approve";
            let verdict = read_verdict(request.into_body()).await?;
            let decided = approvals
                .decide(&id, &caller, approve, verdict)
                .await
                .map_err(ApiError::Decide)?;
            Ok(json(StatusCode::OK, &view(&decided, &caller)))
        }
        (_, [] | [_] | [_, "approve" | "deny"]) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound(format!("no such API path {path}"))),
    }
}

/// Whether the caller may see a request: its requester, or a member of its approver groups.
/// Others learn nothing of it (not even that it exists).
fn visible(request: &super::ApprovalRequest, caller: &Principal) -> bool {
    caller.subject == request.requester.subject
        || request
            .approver_groups
            .iter()
            .any(|g| caller.groups.contains(g) || caller.roles.contains(g))
}

/// A stored request, and whether the caller may decide it.
fn view(request: &super::ApprovalRequest, caller: &Principal) -> Value {
    let mut value = json!(request);
    value["can_decide"] =
        json!(request.status == Status::Pending && Approvals::may_decide(caller, request));
    value
}

fn query_status(query: Option<&str>) -> Result<Option<Status>, ApiError> {
    let wanted = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("status="))
        .unwrap_or("pending");
    match wanted {
        "all" => Ok(None),
        other => other.parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "status must be pending, approved, denied, expired or all, not {other:?}"
            ))
        }),
    }
}

async fn read_verdict<B>(body: B) -> Result<Verdict, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::proxy::BodyError>,
{
    let bytes = Limited::new(body, BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| ApiError::BadRequest(format!("the body could not be read: {e}")))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Verdict::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be {{\"reason\": \"…\", \"scope\": {{\"operation\": \"…\", \"window\": \"30m\"}}}}: {e}"
        ))
    })
}

/// The one mapping of the API's refusals to responses.
fn reject(e: &ApiError) -> Response<Body> {
    let (status, code, message) = match e {
        ApiError::Auth(e) => (e.status(), "Unauthorized", e.public_message()),
        ApiError::Decide(d) => {
            let (status, code) = match d {
                DecideError::Store(StoreError::NotFound(_)) => (StatusCode::NOT_FOUND, "NotFound"),
                DecideError::Store(StoreError::NotPending { .. }) => {
                    (StatusCode::CONFLICT, "NotPending")
                }
                DecideError::SelfApproval(_) => (StatusCode::FORBIDDEN, "SelfApproval"),
                DecideError::NotAnApprover { .. } => (StatusCode::FORBIDDEN, "NotAnApprover"),
                DecideError::Invalid(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
                DecideError::Unavailable(_) | DecideError::Store(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "ApprovalsUnavailable")
                }
            };
            let message = match d {
                DecideError::Unavailable(_)
                | DecideError::Store(StoreError::Database(_) | StoreError::Duplicate(_)) => {
                    let detail = d.to_string();
                    tracing::error!(error = %detail, "approvals: a decision failed");
                    "the approval store or the audit log is unavailable; try again".to_string()
                }
                other => other.to_string(),
            };
            (status, code, message)
        }
        ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "NotFound", m.clone()),
        ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "BadRequest", m.clone()),
        ApiError::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "use GET to read and POST to approve or deny".into(),
        ),
        ApiError::Disabled => (
            StatusCode::NOT_FOUND,
            "ApprovalsDisabled",
            "this gateway has no [approvals] section".into(),
        ),
        ApiError::Unavailable(detail) => {
            tracing::error!(error = %detail, "approvals: the store failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "ApprovalsUnavailable",
                "the approval store is unavailable; try again".into(),
            )
        }
    };
    let mut response = json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    );
    if let ApiError::Auth(e) = e
        && let Some(challenge) = e.challenge()
        && let Ok(value) = http::HeaderValue::from_str(&challenge)
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn page(content_type: &'static str, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(text));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    response
}
