//! `handle()`: the one place where the order of a request's phases is written, top to bottom.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};

use crate::approval::{Ask, Held};
use crate::audit::{self, Trail};
use crate::auth::Caller;
use crate::codec::{self, CodecError, Encoding};
use crate::config::RouteKind;
use crate::error::{self, GatewayError, Ids, X_REQUEST_ID};
use crate::gateway::Gateway;
use crate::mask::{self, BodyKind, PlanRef};
use crate::operation;
use crate::plugin::{
    self, Exchange, HeaderEdit, RequestDecision, RequestOutcome, ResponseDecision, ResponseOutcome,
};
use crate::route::Route;
use crate::upstream::{append_forwarded_for, strip_hop_by_hop};

/// An error inside a body stream.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the gateway sends: streamed from a peer or built in memory.
pub type Body = BoxBody<Bytes, BodyError>;

/// A body held in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The W3C trace context the gateway continues (or starts).
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Who sent a request, and over what.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The peer's address.
    pub addr: SocketAddr,
    /// Whether the connection was TLS.
    pub tls: bool,
}

/// Serve one request: match a route, run the request phase, forward with the gateway's
/// credential, run the response phase. Every exit, success, deny or failure, leaves here.
pub async fn handle<B>(gateway: &Gateway, client: Client, request: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BodyError>,
{
    let started = Instant::now();
    let ids = Ids::new(
        String::from(
            uuid::Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        ),
        request.headers().get("x-ms-client-request-id").cloned(),
    );
    let route = gateway.route(
        authority(request.uri(), request.headers()),
        request.uri().path(),
    );
    // The target is only ever read by the audit log: redacted only when there is one.
    let target = match &gateway.audit {
        Some(_) => [
            authority(request.uri(), request.headers()).unwrap_or_default(),
            &audit::redact_target(request.uri().path_and_query().map_or("/", |p| p.as_str())),
        ]
        .concat(),
        None => String::new(),
    };
    let mut trail = Trail::new(
        &ids.request_id,
        (client.addr, client.tls),
        request.method().as_str(),
        target,
    );
    let head = head_size(&request);
    let outcome = match route {
        _ if head > gateway.max_header_bytes => Err(GatewayError::HeaderTooLarge {
            size: head,
            limit: gateway.max_header_bytes,
        }),
        Some(route) => serve(gateway, route, client, &ids, request, &mut trail).await,
        None => Err(GatewayError::NoRoute {
            host: authority(request.uri(), request.headers())
                .unwrap_or_default()
                .to_string(),
            path: request.uri().path().to_string(),
        }),
    };
    let failure = outcome.as_ref().err().map(|e| {
        let kind = route.map_or(RouteKind::Generic, |r| r.kind);
        (
            matches!(e, GatewayError::Auth(_)),
            e.code(kind),
            e.public_message(),
        )
    });
    let mut response = match outcome {
        Ok(response) => response,
        Err(e) => error::into_response(&e, route.map(|r| r.kind), &ids),
    };
    if let Some(id) = &ids.request_id_header {
        response.headers_mut().insert(X_REQUEST_ID, id.clone());
    }
    // Every exit is audited: a failure before the decision was recorded gets its record now,
    // and the completion record follows the response's last byte.
    if let Some(audit) = &gateway.audit {
        let failed = failure.is_some();
        if let Some((auth, code, message)) = failure {
            trail.decision = if auth { "deny" } else { "error" };
            trail.code = Some(code.to_string());
            trail.reason = Some(message);
            if trail.decision_seq.is_none() {
                let kind = if auth {
                    "auth.failed"
                } else {
                    "request.decision"
                };
                // The client is refused either way; a record that cannot be written is logged.
                let _ = audit.decide(&mut trail, kind).await;
            }
        }
        let outcome = if failed { "error" } else { "ok" };
        response = audit.watch(trail, outcome, response);
    }
    tracing::info!(
        request_id = %ids.request_id,
        route = route.map_or("-", |r| r.name.as_str()),
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

async fn serve<B>(
    gateway: &Gateway,
    route: &Route,
    client: Client,
    ids: &Ids,
    request: Request<B>,
    trail: &mut Trail,
) -> Result<Response<Body>, GatewayError>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BodyError>,
{
    let (mut parts, body) = request.into_parts();
    trail.route = Some(route.name.clone());

    // Who is calling, and which plugins decide for them.
    let caller = gateway
        .identity
        .authenticate(route, &parts.uri, &parts.headers)
        .await?;
    trail.caller = caller.clone();
    // This request's pass through its plugins, which keeps their instances until it is decided.
    let mut chain = route.chain_for(caller.as_deref())?.begin();
    let facts = facts(route, &parts, client, ids, caller.as_deref());
    trail.operation = Some(facts.operation.clone());
    let client_authorization = parts.headers.remove(header::AUTHORIZATION);
    strip_hop_by_hop(&mut parts.headers);
    if gateway.audit.as_ref().is_some_and(|a| a.recording()) {
        trail.entry = Some(Box::new(audit::Entry {
            session: audit::session_id(caller.as_ref().map(|c| &c.principal)),
            started: std::time::SystemTime::now(),
            method: facts.method.clone(),
            url: format!(
                "{}://{}{}",
                facts.scheme, facts.authority, facts.path_and_query
            ),
            request_headers: audit::header_pairs(&parts.headers),
            request_id: ids.request_id.clone(),
            principal: caller
                .as_ref()
                .map(|c| format!("{} ({})", c.principal.subject, c.principal.issuer)),
            ..audit::Entry::default()
        }));
    }
    let headers = Arc::new(std::mem::take(&mut parts.headers));

    // Request phase: headers, then the body for the plugins that asked.
    let outcome = chain.on_request(&facts, &headers).await?;
    trail.steps.extend(outcome.trace.iter().cloned());
    let approvals = gateway.approvals.is_some();
    if let Some(refusal) = refusal(route.kind, &outcome, ids, approvals) {
        return refused(gateway, trail, &outcome, refusal).await;
    }
    let mut edits = outcome.edits.clone();
    let held = matches!(outcome.decision, RequestDecision::RequireApproval { .. });
    let body = match outcome.body_wants.iter().map(|w| w.limit).max() {
        // A request held for approval is bound to its body: read it whole.
        None if held => {
            let bytes = match buffer(body, route.body_limit).await {
                Ok(Buffered::Complete(bytes)) => bytes,
                Ok(Buffered::Over { .. }) => {
                    return Err(GatewayError::RequestBodyTooLarge {
                        limit: route.body_limit,
                    });
                }
                Err(e) => return Err(GatewayError::ClientBody(e.to_string())),
            };
            if let Some(answer) = approve(
                gateway, route, &mut chain, &facts, &headers, &bytes, &outcome, trail, ids,
            )
            .await?
            {
                return Ok(answer);
            }
            if let Some(entry) = trail.entry.as_mut() {
                entry.request_body = Some(bytes.to_vec());
            }
            full(bytes)
        }
        None => body.map_err(Into::into).boxed(),
        Some(want) => {
            let limit = want.min(route.body_limit);
            let bytes = match buffer(body, limit).await {
                Ok(Buffered::Complete(bytes)) => bytes,
                Ok(Buffered::Over { .. }) => {
                    return Err(GatewayError::RequestBodyTooLarge { limit });
                }
                Err(e) => return Err(GatewayError::ClientBody(e.to_string())),
            };
            let body_outcome = chain
                .on_request_body(&facts, &headers, &bytes, &outcome.body_wants)
                .await?;
            trail.steps.extend(body_outcome.trace.iter().cloned());
            if let Some(refusal) = refusal(route.kind, &body_outcome, ids, approvals) {
                return refused(gateway, trail, &body_outcome, refusal).await;
            }
            // A plugin may ask for approval at header time while an earlier one still wanted
            // the body: those body hooks ran (and could deny); the approval still stands.
            let held = match body_outcome.decision {
                RequestDecision::RequireApproval { .. } => &body_outcome,
                _ => &outcome,
            };
            if let Some(answer) = approve(
                gateway, route, &mut chain, &facts, &headers, &bytes, held, trail, ids,
            )
            .await?
            {
                return Ok(answer);
            }
            edits.extend(body_outcome.edits);
            if let Some(entry) = trail.entry.as_mut() {
                entry.request_body = Some(bytes.to_vec());
            }
            full(bytes)
        }
    };

    // The decision is on record before anything leaves (503 if it cannot be written).
    if let Some(audit) = &gateway.audit {
        audit.decide(trail, "request.decision").await?;
    }

    // Forward, with the gateway's credential for this upstream.
    let mut headers = Arc::unwrap_or_clone(headers);
    apply_edits(&mut headers, &edits);
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    // The length is set before signing (a Shared Key signature covers it); a bodiless request
    // that came without one gets none.
    if let Some(len) = body.size_hint().exact()
        && (len > 0 || headers.contains_key(header::CONTENT_LENGTH))
    {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    append_forwarded_for(&mut headers, client.addr.ip());
    set_trace_headers(&mut headers, ids);
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream_request = Request::new(body);
    *upstream_request.method_mut() = parts.method.clone();
    *upstream_request.uri_mut() = route.upstream.uri(path_and_query)?;
    *upstream_request.version_mut() = Version::HTTP_11;
    *upstream_request.headers_mut() = headers;
    let response = route
        .upstream
        .forward(upstream_request, client_authorization.as_ref())
        .await?;

    // Response phase: headers, then the body for the plugins that asked; masks run here.
    let (mut parts, body) = response.into_parts();
    trail.upstream = Some((parts.status.as_u16(), upstream_request_id(&parts.headers)));
    // The client's connection decides the version it is answered in, not the upstream's.
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let headers = Arc::new(std::mem::take(&mut parts.headers));
    let status = parts.status.as_u16();
    let outcome = chain.on_response(&facts, status, &headers).await?;
    if let Some(replacement) = replacement(&outcome) {
        return Ok(replacement);
    }
    let want = outcome.body_wants.iter().map(|w| w.limit).max();
    let Some(want) = want.filter(|_| has_body(&facts.method, parts.status)) else {
        parts.headers = Arc::unwrap_or_clone(headers);
        return Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed(),
        ));
    };
    let limit = want.min(route.body_limit);
    let raw = match buffer(body, limit).await {
        Ok(Buffered::Complete(bytes)) => bytes,
        Ok(Buffered::Over { prefix, rest }) if route.unmasked_passthrough => {
            parts.headers = Arc::unwrap_or_clone(headers);
            return Ok(unmasked(route, ids, limit, parts, chain_body(prefix, rest)));
        }
        Ok(Buffered::Over { .. }) => return Err(GatewayError::ResponseBodyTooLarge { limit }),
        Err(e) => return Err(GatewayError::Upstream(format!("response body: {e}"))),
    };
    let encoding = Encoding::from_headers(&headers)?;
    let plain = match codec::decode(encoding, &raw, limit as usize) {
        Ok(plain) => plain,
        Err(CodecError::TooLarge { .. }) if route.unmasked_passthrough => {
            parts.headers = Arc::unwrap_or_clone(headers);
            return Ok(unmasked(route, ids, limit, parts, full(raw)));
        }
        Err(CodecError::TooLarge { .. }) => {
            return Err(GatewayError::ResponseBodyTooLarge { limit });
        }
        Err(e) => return Err(e.into()),
    };
    let outcome = chain
        .on_response_body(&facts, status, &headers, &plain, &outcome.body_wants)
        .await?;
    if let Some(replacement) = replacement(&outcome) {
        return Ok(replacement);
    }
    parts.headers = Arc::unwrap_or_clone(headers);
    let body = masked(gateway, trail, &mut parts.headers, &outcome, raw, &plain)?;
    Ok(Response::from_parts(parts, full(body)))
}

/// A response over the inspection limit, sent uninspected because the route allows it; logged,
/// since plugins that asked for the body never saw it.
fn unmasked(
    route: &Route,
    ids: &Ids,
    limit: u64,
    parts: http::response::Parts,
    body: Body,
) -> Response<Body> {
    tracing::warn!(
        request_id = %ids.request_id,
        route = %route.name,
        limit,
        "response body over the inspection limit passed through unmasked (route allows it)"
    );
    Response::from_parts(parts, body)
}

/// Execute the response's mask plans natively. An unchanged body goes out byte for byte; a
/// changed one is re-encoded as it came, with its length recomputed and its validators dropped.
/// What was masked where (never a value) is logged and kept for the audit record.
fn masked(
    gateway: &Gateway,
    trail: &mut Trail,
    headers: &mut HeaderMap,
    outcome: &ResponseOutcome,
    raw: Bytes,
    plain: &[u8],
) -> Result<Bytes, GatewayError> {
    if outcome.masks.is_empty() {
        return Ok(raw);
    }
    // The encoding the body came in, and goes back out in.
    let encoding = Encoding::from_headers(headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let kind = BodyKind::from_content_type(content_type).ok_or_else(|| {
        GatewayError::Internal(format!(
            "a plugin masked a body of content type {content_type:?}, which the host cannot mask"
        ))
    })?;
    let plans: Vec<PlanRef<'_>> = outcome
        .masks
        .iter()
        .map(|(plugin, plan)| PlanRef {
            plan,
            patterns: plugin.patterns(),
        })
        .collect();
    let result = mask::apply(plain, kind, &plans, gateway.hash_key.as_deref())?;
    let reported = outcome.masks.iter().flat_map(|(_, plan)| &plan.findings);
    trail.findings = result
        .findings
        .iter()
        .chain(reported.clone())
        .map(|f| serde_json::json!({"kind": f.kind, "location": f.location, "count": f.count}))
        .collect();
    if !result.findings.is_empty() || reported.clone().next().is_some() {
        tracing::info!(
            request_id = %trail.request_id,
            route = trail.route.as_deref().unwrap_or("-"),
            masked = result.masked,
            findings = %mask::summarize(result.findings.iter().chain(reported)),
            "response body masked"
        );
    }
    if !result.changed {
        return Ok(raw);
    }
    let body = codec::encode(encoding, &result.body)?;
    if let Some(range) = headers.get(header::CONTENT_RANGE) {
        let range = mask::masked_range(range.to_str().unwrap_or_default(), body.len())?;
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&range).map_err(|e| GatewayError::Internal(e.to_string()))?,
        );
    }
    for stale in [
        "etag",
        "content-md5",
        "x-ms-content-crc64",
        "x-ms-blob-content-md5",
    ] {
        headers.remove(stale);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(body)
}

/// The size of a request's head as sent: URI, and each header's name, value and separators.
fn head_size<B>(request: &Request<B>) -> u64 {
    let headers: usize = request
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let uri = request.uri();
    let target = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len());
    (target + headers) as u64
}

/// What every hook learns about the request.
fn facts(
    route: &Route,
    parts: &http::request::Parts,
    client: Client,
    ids: &Ids,
    caller: Option<&Caller>,
) -> plugin::Request {
    let path = parts.uri.path();
    plugin::Request {
        id: ids.request_id.clone(),
        method: parts.method.as_str().to_string(),
        scheme: if client.tls { "https" } else { "http" }.into(),
        authority: authority(&parts.uri, &parts.headers)
            .unwrap_or_default()
            .to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| path.to_string(), |p| p.as_str().to_string()),
        route: route.name.clone(),
        operation: operation::derive(
            route.kind,
            &parts.method,
            route.resource_path(path),
            parts.uri.query(),
            &parts.headers,
        ),
        principal: caller.map(|c| c.principal.clone()),
    }
}

/// The authority the client addressed: `:authority` (HTTP/2) or `Host` (HTTP/1.1).
fn authority<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// A plugin's deny, or its approval request when this gateway has no approvals, as the
/// response the client gets.
fn refusal(
    kind: RouteKind,
    outcome: &RequestOutcome,
    ids: &Ids,
    approvals: bool,
) -> Option<Response<Body>> {
    match &outcome.decision {
        RequestDecision::Continue => None,
        RequestDecision::RequireApproval { .. } if approvals => None,
        RequestDecision::Deny { by, deny } => {
            tracing::info!(request_id = %ids.request_id, plugin = %by, code = %deny.code, "denied");
            let status = StatusCode::from_u16(deny.status).unwrap_or(StatusCode::FORBIDDEN);
            Some(match &deny.body {
                Some(body) => {
                    let mut response = Response::new(full(body.clone()));
                    *response.status_mut() = status;
                    response
                }
                None => error::reject(kind, status, &deny.code, &deny.reason, ids),
            })
        }
        RequestDecision::RequireApproval { by, approval } => {
            // Without [approvals], a request that needs approval fails closed.
            tracing::info!(request_id = %ids.request_id, plugin = %by, "approval required; this gateway has no [approvals]");
            Some(error::reject(
                kind,
                StatusCode::FORBIDDEN,
                "ApprovalRequired",
                &format!(
                    "this operation needs a human's approval ({}), and this gateway has no \
                     approval workflow enabled",
                    approval.summary.chars().take(200).collect::<String>()
                ),
                ids,
            ))
        }
    }
}

/// Hold a request a plugin asked a human to approve (see `approval`): `None` when a grant
/// lets it through (its decision record then says so), else the answer, on record.
#[allow(clippy::too_many_arguments)]
async fn approve(
    gateway: &Gateway,
    route: &Route,
    chain: &mut Exchange<'_>,
    facts: &plugin::Request,
    headers: &HeaderMap,
    body: &Bytes,
    outcome: &RequestOutcome,
    trail: &mut Trail,
    ids: &Ids,
) -> Result<Option<Response<Body>>, GatewayError> {
    let (Some(approvals), RequestDecision::RequireApproval { by, approval }) =
        (&gateway.approvals, &outcome.decision)
    else {
        return Ok(None);
    };
    // A human may take minutes: the request keeps no plugin instance while it waits.
    chain.drop_instances();
    let url = format!(
        "{}://{}{}",
        facts.scheme, facts.authority, facts.path_and_query
    );
    let held = approvals
        .hold(Ask {
            request_id: &ids.request_id,
            route: &route.name,
            operation: &facts.operation,
            plugin: &by.name,
            principal: facts.principal.as_ref(),
            summary: &approval.summary,
            approver_groups: &approval.approver_groups,
            hold: route
                .approval_hold
                .min(Duration::from_millis(approval.budget_ms)),
            method: &facts.method,
            url: &url,
            path_and_query: &facts.path_and_query,
            headers,
            body,
        })
        .await?;
    trail.by = Some(by.name.clone());
    let (status, code, message, id) = match held {
        Held::Granted { approval, .. } => {
            trail.decision = "approved";
            trail.approval = Some(approval);
            return Ok(None);
        }
        Held::Denied { approval, reason } => (
            StatusCode::FORBIDDEN,
            "ApprovalDenied",
            format!("an approver denied this request (approval {approval}): {reason}"),
            approval,
        ),
        Held::Pending { approval, .. } => (
            StatusCode::FORBIDDEN,
            "ApprovalPending",
            format!(
                "this request waits for a human's approval (approval {approval}); once it is \
                 approved, send the identical request again"
            ),
            approval,
        ),
        Held::Expired { approval } => (
            StatusCode::FORBIDDEN,
            "ApprovalExpired",
            format!(
                "approval {approval} expired without a decision; send the request again to ask anew"
            ),
            approval,
        ),
        Held::Used { approval } => (
            StatusCode::FORBIDDEN,
            "ApprovalUsed",
            format!(
                "approval {approval} was used by an identical request; send the request again to ask anew"
            ),
            approval,
        ),
    };
    trail.decision = if code == "ApprovalDenied" {
        "deny"
    } else {
        "approval-required"
    };
    trail.code = Some(code.to_string());
    trail.reason = Some(message.clone());
    trail.approval = Some(id.clone());
    tracing::info!(request_id = %ids.request_id, approval = %id, code, "held for approval");
    let mut response = error::reject(route.kind, status, code, &message, ids);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert("x-portcullis-approval-id", value);
    }
    if code == "ApprovalPending" {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(approvals.retry_after().as_secs().max(1)),
        );
    }
    if let Some(audit) = &gateway.audit {
        let _ = audit.decide(trail, "request.decision").await;
    }
    Ok(Some(response))
}

/// Record a plugin's deny or approval request, then answer with `refusal`. The refusal stands
/// even when its record cannot be written (the failure is logged by the audit log).
async fn refused(
    gateway: &Gateway,
    trail: &mut Trail,
    outcome: &RequestOutcome,
    refusal: Response<Body>,
) -> Result<Response<Body>, GatewayError> {
    match &outcome.decision {
        RequestDecision::Deny { by, deny } => {
            trail.decision = "deny";
            trail.by = Some(by.name.clone());
            trail.code = Some(deny.code.clone());
            trail.reason = Some(deny.reason.clone());
        }
        RequestDecision::RequireApproval { by, .. } => {
            trail.decision = "approval-required";
            trail.by = Some(by.name.clone());
            trail.code = Some("ApprovalRequired".into());
        }
        RequestDecision::Continue => {}
    }
    if let Some(audit) = &gateway.audit {
        let _ = audit.decide(trail, "request.decision").await;
    }
    Ok(refusal)
}

/// The upstream's own id for the request (Azure `x-ms-request-id`, AWS, or `x-request-id`).
fn upstream_request_id(headers: &HeaderMap) -> Option<String> {
    ["x-ms-request-id", "x-amz-request-id", "x-request-id"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok())
        .map(|v| v.chars().take(128).collect())
}

/// A plugin's replacement response, if it made one.
fn replacement(outcome: &ResponseOutcome) -> Option<Response<Body>> {
    let ResponseDecision::Replace { replacement, .. } = &outcome.decision else {
        return None;
    };
    let mut response = Response::new(full(replacement.body.clone()));
    *response.status_mut() = StatusCode::from_u16(replacement.status).unwrap_or(StatusCode::OK);
    for (name, value) in &replacement.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response.headers_mut().remove(header::CONTENT_LENGTH);
    Some(response)
}

fn apply_edits(headers: &mut HeaderMap, edits: &[HeaderEdit]) {
    for edit in edits {
        // The contract checked names and values already; anything unparsable is skipped.
        match edit {
            HeaderEdit::Set((n, v)) | HeaderEdit::Append((n, v)) => {
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(n.as_bytes()),
                    HeaderValue::from_str(v),
                ) else {
                    continue;
                };
                if matches!(edit, HeaderEdit::Set(_)) {
                    headers.insert(name, value);
                } else {
                    headers.append(name, value);
                }
            }
            HeaderEdit::Remove(n) => {
                if let Ok(name) = HeaderName::from_bytes(n.as_bytes()) {
                    headers.remove(name);
                }
            }
        }
    }
}

/// Set `x-request-id`, and continue the client's W3C trace (or start one) with a new span.
fn set_trace_headers(headers: &mut HeaderMap, ids: &Ids) {
    if let Some(id) = &ids.request_id_header {
        headers.insert(X_REQUEST_ID, id.clone());
    }
    let mut span = uuid::Uuid::encode_buffer();
    let span = &uuid::Uuid::new_v4().simple().encode_lower(&mut span)[..16];
    let incoming = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let value = match incoming {
        Some((trace, flags)) => format!("00-{trace}-{span}-{flags}"),
        None => format!("00-{}-{span}-01", uuid::Uuid::new_v4().simple()),
    };
    // Takes the string's buffer as is (`from_str` would copy it).
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(TRACEPARENT, v);
    }
}

/// The trace id and flags of a valid version-00 `traceparent`.
fn parse_traceparent(value: &str) -> Option<(String, String)> {
    let mut fields = value.trim().split('-');
    let (version, trace, parent, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = version == "00"
        && fields.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then(|| (trace.to_string(), flags.to_string()))
}

/// Whether a response to this method with this status carries a body.
fn has_body(method: &str, status: StatusCode) -> bool {
    method != "HEAD"
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// A body read into memory up to a limit.
enum Buffered<B> {
    /// The whole body.
    Complete(Bytes),
    /// More than the limit: what was read, and the rest still to stream.
    Over { prefix: Bytes, rest: B },
}

/// Read a body up to `limit` bytes. A declared length over the limit is refused before
/// reading anything.
async fn buffer<B>(mut body: B, limit: u64) -> Result<Buffered<B>, BodyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    if body.size_hint().lower() > limit {
        return Ok(Buffered::Over {
            prefix: Bytes::new(),
            rest: body,
        });
    }
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        if let Ok(data) = frame.into_data() {
            collected.extend_from_slice(&data);
            if collected.len() as u64 > limit {
                return Ok(Buffered::Over {
                    prefix: collected.freeze(),
                    rest: body,
                });
            }
        }
    }
    Ok(Buffered::Complete(collected.freeze()))
}

/// A body that sends `prefix` and then streams `rest`.
fn chain_body<B>(prefix: Bytes, rest: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BodyError>,
{
    let first =
        futures_util::stream::once(
            async move { Ok::<_, BodyError>(http_body::Frame::data(prefix)) },
        );
    let rest = http_body_util::BodyStream::new(rest.map_err(Into::into));
    StreamBody::new(futures_util::StreamExt::chain(first, rest)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_keeps_its_trace_id() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let ids = Ids::new("r".into(), None);
        set_trace_headers(&mut h, &ids);
        let v = h["traceparent"].to_str().unwrap_or_default();
        assert!(v.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{v}");
        assert!(!v.contains("00f067aa0ba902b7"), "a new span id: {v}");
        assert!(v.ends_with("-01"));
    }

    #[test]
    fn an_invalid_traceparent_starts_a_new_trace() {
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            parse_traceparent("zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none()
        );
    }
}
