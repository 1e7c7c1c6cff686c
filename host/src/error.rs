//! Failures on the request path (`GatewayError`), their statuses, and the route's error shape:
//! the one place where a failure, or a plugin's deny, becomes a response to the client.
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::auth::AuthError;
use crate::codec::CodecError;
use crate::config::RouteKind;
use crate::credential::CredentialError;
use crate::mask::MaskError;
use crate::plugin::PluginError;
use crate::proxy::{Body, full};

/// A request could not be served. A plugin's deny is not an error: it is a decision, and is
/// answered through [`reject`] directly.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the host and path.
    #[error("no route matches host {host:?} and path {path:?}")]
    NoRoute {
        /// The host the client addressed.
        host: String,
        /// The request path.
        path: String,
    },
    /// The caller could not be authenticated, or may not use the route.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request is malformed.
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// The request line and headers are larger than the server accepts.
    #[error("request head of {size} bytes is over the {limit}-byte limit")]
    HeaderTooLarge {
        /// The head's size.
        size: u64,
        /// `server.max_header_bytes`.
        limit: u64,
    },
    /// The request body could not be read from the client.
    #[error("reading the request body failed: {0}")]
    ClientBody(String),
    /// A plugin asked for a request body larger than the route lets the gateway buffer.
    #[error("request body is larger than the {limit} bytes the route inspects")]
    RequestBodyTooLarge {
        /// The route's limit.
        limit: u64,
    },
    /// A plugin asked for a response body larger than the route lets the gateway buffer.
    #[error("response body is larger than the {limit} bytes the route inspects")]
    ResponseBodyTooLarge {
        /// The route's limit.
        limit: u64,
    },
    /// The upstream refused the connection, reset it, or sent garbage.
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// The audit log cannot take the request's decision record, and the operator chose to
    /// refuse requests then (`audit.on_failure = "deny"`).
    #[error("the audit log cannot be written: {0}")]
    AuditUnavailable(String),
    /// The approval store cannot be read or written: a request that needs approval is refused.
    #[error("approvals: {0}")]
    ApprovalsUnavailable(String),
    /// The upstream did not answer in time (connect or response head).
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(std::time::Duration),
    /// The gateway could not obtain its own upstream credential.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// A fail-closed plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A mask plan could not be executed: the response is withheld.
    #[error("masking the response failed: {0}")]
    Mask(#[from] MaskError),
    /// A body's Content-Encoding could not be decoded or re-encoded.
    #[error("response encoding: {0}")]
    Codec(#[from] CodecError),
    /// Anything else: a bug, never the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// The status the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NoRoute { .. } => StatusCode::NOT_FOUND,
            GatewayError::Auth(e) => e.status(),
            GatewayError::BadRequest(_)
            | GatewayError::ClientBody(_)
            | GatewayError::Credential(CredentialError::Sign { .. }) => StatusCode::BAD_REQUEST,
            GatewayError::RequestBodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::HeaderTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::ResponseBodyTooLarge { .. }
            | GatewayError::Upstream(_)
            | GatewayError::Credential(_)
            | GatewayError::Mask(_)
            | GatewayError::Codec(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Plugin(PluginError::BodyTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::AuditUnavailable(_) | GatewayError::ApprovalsUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Plugin(PluginError::Capacity { .. } | PluginError::Timeout { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Plugin(_) | GatewayError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The machine-readable code the client sees; for authentication failures, the code the
    /// route's service uses, so its SDK recognises it.
    pub fn code(&self, kind: RouteKind) -> &'static str {
        match self {
            GatewayError::NoRoute { .. } => "NoRoute",
            GatewayError::Auth(e) => auth_code(e, kind),
            GatewayError::BadRequest(_) => "BadRequest",
            GatewayError::HeaderTooLarge { .. } => "RequestHeaderFieldsTooLarge",
            GatewayError::ClientBody(_) => "RequestBodyUnreadable",
            GatewayError::RequestBodyTooLarge { .. } => "RequestBodyTooLarge",
            GatewayError::ResponseBodyTooLarge { .. } => "ResponseBodyTooLarge",
            GatewayError::Upstream(_) => "UpstreamUnavailable",
            GatewayError::UpstreamTimeout(_) => "UpstreamTimeout",
            GatewayError::Credential(CredentialError::Sign { .. }) => "BadRequest",
            GatewayError::Credential(_) => "UpstreamCredentialUnavailable",
            GatewayError::Plugin(PluginError::BodyTooLarge { .. }) => "RequestBodyTooLarge",
            GatewayError::Plugin(_) => "PolicyFailure",
            GatewayError::Mask(_) | GatewayError::Codec(_) => "ResponseMaskingFailed",
            GatewayError::Internal(_) => "InternalError",
            GatewayError::AuditUnavailable(_) => "AuditUnavailable",
            GatewayError::ApprovalsUnavailable(_) => "ApprovalsUnavailable",
        }
    }

    /// What the client is told: short, and free of internals (no plugin trap text, no upstream
    /// address, no credential detail). The full error goes to the log with the request id.
    pub fn public_message(&self) -> String {
        match self {
            GatewayError::NoRoute { path, .. } => {
                format!("no route of this gateway serves {}", truncate(path, 200))
            }
            GatewayError::Auth(e) => e.public_message(),
            GatewayError::BadRequest(reason) => format!("malformed request: {reason}"),
            GatewayError::HeaderTooLarge { limit, .. } => {
                format!(
                    "the request headers are larger than the {limit} bytes this gateway accepts"
                )
            }
            GatewayError::ClientBody(_) => "the request body could not be read".into(),
            GatewayError::RequestBodyTooLarge { limit } => {
                format!("the request body is larger than the {limit} bytes this route inspects")
            }
            GatewayError::ResponseBodyTooLarge { limit } => format!(
                "the response body is larger than the {limit} bytes this route inspects, and \
                 this route does not pass uninspected responses"
            ),
            GatewayError::Upstream(_) => "the upstream service could not be reached".into(),
            GatewayError::UpstreamTimeout(d) => {
                format!("the upstream service did not answer within {d:?}")
            }
            GatewayError::Credential(CredentialError::Sign { .. }) => {
                "the request cannot be signed for the upstream (a signed header is repeated)".into()
            }
            GatewayError::Credential(_) => {
                "the gateway could not obtain its credential for the upstream service".into()
            }
            GatewayError::Plugin(PluginError::BodyTooLarge { limit, .. }) => {
                format!("the request body is larger than the {limit} bytes the policy inspects")
            }
            GatewayError::Plugin(e) => match e.plugin() {
                Some(p) => format!("policy plugin {} failed; the request was refused", p.name),
                None => "a policy plugin failed; the request was refused".into(),
            },
            GatewayError::Mask(_) | GatewayError::Codec(_) => {
                "the response could not be masked as policy requires; it was withheld".into()
            }
            GatewayError::Internal(_) => "internal gateway error".into(),
            GatewayError::AuditUnavailable(_) => {
                "the gateway cannot write its audit log, so it forwards nothing; try again later"
                    .into()
            }
            GatewayError::ApprovalsUnavailable(_) => {
                "this request needs a human's approval, and the approval store is unavailable; \
                 try again later"
                    .into()
            }
        }
    }
}

/// The error code of an authentication failure, in the route's service's vocabulary.
fn auth_code(error: &AuthError, kind: RouteKind) -> &'static str {
    match (error, kind) {
        (AuthError::KeysUnavailable { .. }, _) => "IdentityProviderUnavailable",
        (AuthError::Forbidden { .. }, RouteKind::AzureStorage) => "AuthorizationPermissionMismatch",
        (AuthError::Forbidden { .. }, RouteKind::AzureArm) => "AuthorizationFailed",
        (AuthError::Forbidden { .. }, RouteKind::Generic) => "Forbidden",
        (AuthError::Missing, RouteKind::AzureStorage) => "NoAuthenticationInformation",
        (AuthError::Missing, RouteKind::AzureArm) => "AuthenticationFailed",
        (AuthError::Missing, RouteKind::Generic) => "MissingToken",
        (AuthError::Ambiguous | AuthError::QueryToken, RouteKind::Generic) => "InvalidRequest",
        (_, RouteKind::AzureStorage) => "InvalidAuthenticationInfo",
        (_, RouteKind::AzureArm) => "InvalidAuthenticationToken",
        (_, RouteKind::Generic) => "InvalidToken",
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The gateway's id for a request, on the response and the forwarded request.
pub const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// Who the response is for: the ids it must carry.
#[derive(Debug, Clone)]
pub struct Ids {
    /// The gateway's request id.
    pub request_id: String,
    /// The request id as a header value, made once for every header that carries it.
    pub request_id_header: Option<HeaderValue>,
    /// The client's `x-ms-client-request-id`, echoed when present.
    pub client_request_id: Option<HeaderValue>,
}

impl Ids {
    /// The ids of one request.
    pub fn new(request_id: String, client_request_id: Option<HeaderValue>) -> Ids {
        Ids {
            request_id_header: HeaderValue::from_str(&request_id).ok(),
            request_id,
            client_request_id,
        }
    }
}

/// Turn a failure into the route's error response (`kind` is `None` before a route matched).
pub fn into_response(error: &GatewayError, kind: Option<RouteKind>, ids: &Ids) -> Response<Body> {
    if error.status().is_server_error() {
        tracing::error!(request_id = %ids.request_id, error = %error, "request failed");
    } else {
        tracing::info!(request_id = %ids.request_id, error = %error, "request refused");
    }
    let kind = kind.unwrap_or_default();
    let mut response = reject(
        kind,
        error.status(),
        error.code(kind),
        &error.public_message(),
        ids,
    );
    if let GatewayError::Auth(e) = error
        && let Some(challenge) = e.challenge()
        && let Ok(value) = HeaderValue::from_str(&challenge)
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// A refusal in the route's error shape, so the client's SDK surfaces it as a normal service
/// error: Azure Storage gets `x-ms-error-code` and an XML `<Error>`, Azure Resource Manager
/// and generic routes get `{"error":{"code","message"}}`. The message names the request id.
pub fn reject(
    kind: RouteKind,
    status: StatusCode,
    code: &str,
    message: &str,
    ids: &Ids,
) -> Response<Body> {
    let message = format!("{message} (request id {})", ids.request_id);
    let (content_type, body) = match kind {
        RouteKind::AzureStorage => (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>",
                escape_xml(code),
                escape_xml(&message)
            ),
        ),
        RouteKind::AzureArm | RouteKind::Generic => (
            "application/json",
            serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
        ),
    };
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(id) = &ids.request_id_header {
        headers.insert(X_REQUEST_ID, id.clone());
        if kind != RouteKind::Generic {
            headers.insert("x-ms-request-id", id.clone());
        }
        if kind == RouteKind::AzureArm {
            headers.insert("x-ms-correlation-request-id", id.clone());
        }
    }
    if kind == RouteKind::AzureStorage
        && let Ok(code) = HeaderValue::from_str(code)
    {
        headers.insert("x-ms-error-code", code);
    }
    if let Some(client_id) = &ids.client_request_id {
        headers.insert("x-ms-client-request-id", client_id.clone());
    }
    response
}

fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use http_body_util::BodyExt;

    use super::*;

    fn ids() -> Ids {
        Ids::new("req-1".into(), Some(HeaderValue::from_static("client-7")))
    }

    async fn text(r: Response<Body>) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn storage_refusals_carry_the_error_code_header_and_xml() {
        let r = reject(
            RouteKind::AzureStorage,
            StatusCode::FORBIDDEN,
            "deny-delete",
            "no <deletes>",
            &ids(),
        );
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["x-ms-error-code"], "deny-delete");
        assert_eq!(r.headers()["x-ms-request-id"], "req-1");
        assert_eq!(r.headers()["x-ms-client-request-id"], "client-7");
        assert_eq!(
            text(r).await,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>deny-delete</Code>\
             <Message>no &lt;deletes&gt; (request id req-1)</Message></Error>"
        );
    }

    #[tokio::test]
    async fn arm_refusals_are_json_errors_with_correlation_ids() {
        let r = reject(
            RouteKind::AzureArm,
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "no \"deletes\"",
            &ids(),
        );
        assert_eq!(r.headers()["x-ms-correlation-request-id"], "req-1");
        let body: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
        assert_eq!(body["error"]["code"], "AuthorizationFailed");
        assert_eq!(
            body["error"]["message"],
            "no \"deletes\" (request id req-1)"
        );
    }

    #[test]
    fn statuses_follow_the_failure() {
        assert_eq!(GatewayError::Upstream("x".into()).status(), 502);
        assert_eq!(
            GatewayError::UpstreamTimeout(std::time::Duration::from_secs(1)).status(),
            504
        );
        assert_eq!(GatewayError::RequestBodyTooLarge { limit: 1 }.status(), 413);
        assert_eq!(
            GatewayError::ResponseBodyTooLarge { limit: 1 }.status(),
            502
        );
        assert_eq!(GatewayError::BadRequest("x".into()).status(), 400);
    }

    #[test]
    fn public_messages_hide_upstream_details() {
        let e = GatewayError::Upstream("connect 10.1.2.3:443: refused".into());
        assert!(!e.public_message().contains("10.1.2.3"));
    }
}
