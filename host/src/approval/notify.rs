//! Announcing approval requests to webhooks: payload shapes, delivery with retry and backoff,
//! and reporting every attempt.
//!
//! A webhook URL is a secret (a Slack or Teams incoming-webhook URL grants posting by its path
//! alone), so nothing here — errors, logs, `Debug` — shows more of it than `scheme://host:port`.
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::config::{WebhookConfig, WebhookFormat};

/// `User-Agent` of every delivery.
const USER_AGENT: &str = concat!("portcullis", "/", env!("CARGO_PKG_VERSION"));
/// The event every delivery announces.
const EVENT: &str = "approval.requested";
const EVENT_HEADER: HeaderName = HeaderName::from_static("x-portcullis-event");
const DELIVERY_HEADER: HeaderName = HeaderName::from_static("x-portcullis-delivery");
const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("x-portcullis-signature");
/// The longest wait between two attempts, whatever the backoff or `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How much of a receiver's answer is read (and thrown away) so the connection can be reused.
const RESPONSE_DRAIN_LIMIT: usize = 64 * 1024;
/// Longest attempt error text.
const MAX_ERROR_CHARS: usize = 300;
/// Longest summary shown in a chat message (Slack limits a section to 3000 characters).
const MAX_CHAT_SUMMARY_CHARS: usize = 1000;

/// What an approval request announcement says. Never contains secrets: the request is already
/// masked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Notice {
    /// The approval request's id.
    pub id: String,
    /// The route the held request arrived on.
    pub route: String,
    /// The operation the policy named.
    pub operation: String,
    /// Who sent the request: `subject (issuer)`.
    pub requester: String,
    /// The policy's one-line summary of what is asked.
    pub summary: String,
    /// Members of any of these groups may approve.
    pub approver_groups: Vec<String>,
    /// When the request stops waiting, in milliseconds since the Unix epoch.
    pub expires_at: u64,
    /// The masked request (method, URL, headers, body size and hash).
    pub request: Value,
    /// URL of the approval page for this request.
    pub link: String,
}

/// One delivery attempt's outcome.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The webhook's name.
    pub target: String,
    /// 1 for the first try; 0 when nothing could be sent (unknown webhook).
    pub attempt: u32,
    /// The receiver accepted the notice (a 2xx answer).
    pub ok: bool,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// Why the attempt failed: a status or a connection error, never the URL's path or query.
    pub error: Option<String>,
    /// True when no more attempts follow (success or given up).
    pub last: bool,
}

/// The configured webhooks, ready to deliver.
pub struct Notifier {
    hooks: Vec<Hook>,
}

/// One webhook: its receiver, filters, retry policy and client.
struct Hook {
    name: String,
    uri: Uri,
    /// `scheme://host:port`: all of the URL that may be shown.
    origin: String,
    format: WebhookFormat,
    routes: Vec<String>,
    approver_groups: Vec<String>,
    max_attempts: u32,
    backoff: Duration,
    timeout: Duration,
    /// HMAC-SHA256 keyed with the shared secret, when one is set.
    signer: Option<Hmac<Sha256>>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("webhooks", &self.hooks)
            .finish()
    }
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("format", &self.format)
            .field("routes", &self.routes)
            .field("approver_groups", &self.approver_groups)
            .field("max_attempts", &self.max_attempts)
            .field("signed", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

/// What one attempt got.
enum Outcome {
    /// The receiver answered; `Retry-After` in seconds, when it sent one.
    Answered(StatusCode, Option<Duration>),
    /// No answer: connection, TLS or protocol error, or the deadline passed.
    Failed(String),
}

impl Notifier {
    /// Build from config; reads secret files (relative paths are resolved against `base_dir`)
    /// and builds one HTTP client per webhook (https trusting the webhook's `ca_file` or the
    /// system roots; http only to a loopback receiver). Errors name the webhook and the file,
    /// never the secret or the URL's path.
    pub fn new(hooks: &[WebhookConfig], base_dir: &Path) -> Result<Notifier, String> {
        let mut names = HashSet::new();
        let mut built = Vec::with_capacity(hooks.len());
        for config in hooks {
            if !names.insert(config.name.as_str()) {
                return Err(format!("webhook {:?} is configured twice", config.name));
            }
            built.push(Hook::new(config, base_dir)?);
        }
        Ok(Notifier { hooks: built })
    }

    /// Names of the webhooks that want this request: its route is among the webhook's routes
    /// (or it lists none), and one of its approver groups among the webhook's groups (or it
    /// lists none).
    pub fn targets(&self, route: &str, approver_groups: &[String]) -> Vec<String> {
        self.hooks
            .iter()
            .filter(|hook| hook.routes.is_empty() || hook.routes.iter().any(|r| r == route))
            .filter(|hook| {
                hook.approver_groups.is_empty()
                    || approver_groups
                        .iter()
                        .any(|group| hook.approver_groups.contains(group))
            })
            .map(|hook| hook.name.clone())
            .collect()
    }

    /// Deliver to one webhook by name, retrying with backoff: retry on connection errors and
    /// timeouts, 5xx, 408 and 429 (a `Retry-After` in seconds on 429 and 503 replaces the
    /// backoff, at most 60 s); any other answer stops at once (a misconfigured receiver will
    /// not start accepting). Calls `report` after every attempt (the caller records it), and
    /// once with attempt 0 for an unknown webhook. Returns whether it was delivered.
    pub async fn deliver(
        &self,
        target: &str,
        notice: &Notice,
        mut report: impl FnMut(&Attempt) + Send,
    ) -> bool {
        let Some(hook) = self.hooks.iter().find(|hook| hook.name == target) else {
            tracing::warn!(
                webhook = target,
                approval = notice.id,
                "no such webhook: not announced"
            );
            report(&Attempt {
                target: target.to_string(),
                attempt: 0,
                ok: false,
                status: None,
                error: Some("no webhook of this name is configured".into()),
                last: true,
            });
            return false;
        };
        hook.deliver(notice, &mut report).await
    }
}

impl Hook {
    fn new(config: &WebhookConfig, base_dir: &Path) -> Result<Hook, String> {
        let name = &config.name;
        let fail = |reason: String| format!("webhook {name:?}: {reason}");
        if name.trim().is_empty() {
            return Err("a webhook has an empty name".into());
        }
        if name.trim() != name || HeaderValue::from_str(name).is_err() {
            return Err(fail(
                "the name must be printable ASCII without leading or trailing spaces".into(),
            ));
        }
        // Never show the URL itself: its path may be the secret.
        let uri: Uri = config
            .url
            .parse()
            .map_err(|_| fail("url is not a valid URL".into()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(fail(
                    "url must start with https:// (or http:// to loopback)".into(),
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| fail("url has no host".into()))?;
        if authority.as_str().contains('@') {
            return Err(fail("url must not carry user information".into()));
        }
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let origin = format!("{}://{host}:{port}", if https { "https" } else { "http" });
        if !https && !is_loopback(host) {
            return Err(fail(format!(
                "{origin} is plain http: only a loopback receiver may be, use https"
            )));
        }
        if config.max_attempts == 0 {
            return Err(fail("max_attempts must be at least 1".into()));
        }
        if config.timeout.is_zero() {
            return Err(fail("timeout must be more than 0".into()));
        }
        let signer = match &config.secret_file {
            Some(file) => {
                let path = base_dir.join(file);
                let secret = read_secret(&path).map_err(fail)?;
                let signer = Hmac::<Sha256>::new_from_slice(&secret).map_err(|_| {
                    fail(format!(
                        "the secret in {} is not a usable key",
                        path.display()
                    ))
                })?;
                Some(signer)
            }
            None => None,
        };
        let ca_file = config.ca_file.as_ref().map(|file| base_dir.join(file));
        let connector = crate::upstream::https_connector(https, ca_file.as_deref(), config.timeout)
            .map_err(|reason| fail(format!("TLS client: {reason}")))?;
        Ok(Hook {
            name: name.clone(),
            uri,
            origin,
            format: config.format,
            routes: config.routes.clone(),
            approver_groups: config.approver_groups.clone(),
            max_attempts: config.max_attempts,
            backoff: config.backoff.min(MAX_WAIT),
            timeout: config.timeout,
            signer,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn deliver(&self, notice: &Notice, report: &mut (impl FnMut(&Attempt) + Send)) -> bool {
        let request = match self.request(notice) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(webhook = self.name, approval = notice.id, %error, "not announced");
                report(&Attempt {
                    target: self.name.clone(),
                    attempt: 0,
                    ok: false,
                    status: None,
                    error: Some(error),
                    last: true,
                });
                return false;
            }
        };
        let mut backoff = self.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (ok, status, error, retry, retry_after) = match self.send(request.clone()).await {
                Outcome::Answered(status, retry_after) => {
                    let ok = status.is_success();
                    let retry = status.is_server_error()
                        || status == StatusCode::REQUEST_TIMEOUT
                        || status == StatusCode::TOO_MANY_REQUESTS;
                    let honoured = (status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::SERVICE_UNAVAILABLE)
                        .then_some(retry_after)
                        .flatten();
                    let error = (!ok).then(|| format!("HTTP {status}"));
                    (ok, Some(status.as_u16()), error, retry, honoured)
                }
                Outcome::Failed(error) => (false, None, Some(error), true, None),
            };
            let last = ok || !retry || attempt >= self.max_attempts;
            let wait = retry_after.unwrap_or(backoff).min(MAX_WAIT);
            match (&error, last) {
                (None, _) => tracing::info!(
                    webhook = self.name,
                    approval = notice.id,
                    attempt,
                    status,
                    "approval request announced"
                ),
                (Some(error), false) => tracing::warn!(
                    webhook = self.name,
                    approval = notice.id,
                    attempt,
                    status,
                    %error,
                    retry_in = %humantime::format_duration(wait),
                    "approval announcement failed; retrying"
                ),
                (Some(error), true) => tracing::warn!(
                    webhook = self.name,
                    approval = notice.id,
                    attempt,
                    status,
                    %error,
                    "approval announcement failed; giving up"
                ),
            }
            report(&Attempt {
                target: self.name.clone(),
                attempt,
                ok,
                status,
                error,
                last,
            });
            if last {
                return ok;
            }
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2).min(MAX_WAIT);
        }
    }

    /// The request every attempt sends: the payload, signed when a secret is set.
    fn request(&self, notice: &Notice) -> Result<Request<Full<Bytes>>, String> {
        let body = Bytes::from(payload(self.format, notice).to_string());
        let delivery = HeaderValue::from_str(&format!("{}-{}", notice.id, self.name))
            .map_err(|_| "the approval id cannot be sent in a header".to_string())?;
        let mut builder = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .header(EVENT_HEADER, EVENT)
            .header(DELIVERY_HEADER, delivery);
        if let Some(signer) = &self.signer {
            let mut mac = signer.clone();
            mac.update(&body);
            let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            builder = builder.header(SIGNATURE_HEADER, signature);
        }
        builder
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))
    }

    /// One attempt, bounded by the timeout: the answer's head decides; up to 64 KiB of its
    /// body is read and thrown away within the same deadline.
    async fn send(&self, request: Request<Full<Bytes>>) -> Outcome {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_) => {
                return Outcome::Failed(format!(
                    "no answer from {} within {}",
                    self.origin,
                    humantime::format_duration(self.timeout)
                ));
            }
            Ok(Err(error)) => return Outcome::Failed(self.describe(&error)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let drain = Limited::new(response.into_body(), RESPONSE_DRAIN_LIMIT).collect();
        let _ = tokio::time::timeout_at(deadline, drain).await;
        Outcome::Answered(status, retry_after)
    }

    /// A transport error on one line, naming the receiver by `scheme://host:port` only.
    fn describe(&self, error: &hyper_util::client::legacy::Error) -> String {
        let mut causes: Vec<String> = Vec::new();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !causes.iter().any(|known| known.contains(&text)) {
                causes.push(text);
            }
            source = cause.source();
        }
        let what = if error.is_connect() {
            "cannot connect to"
        } else {
            "request failed at"
        };
        let reason = if causes.is_empty() {
            error.to_string()
        } else {
            causes.join(": ")
        };
        let mut text = format!("{what} {}: {reason}", self.origin);
        // No error should carry the URL, but its path and query must never be shown.
        let path = self.uri.path();
        let secrets = [
            self.uri.path_and_query().map(|pq| pq.as_str()),
            (path.len() > 1).then_some(path),
            self.uri.query().filter(|q| !q.is_empty()),
        ];
        for secret in secrets.into_iter().flatten() {
            text = text.replace(secret, "/…");
        }
        if let Some((cut, _)) = text.char_indices().nth(MAX_ERROR_CHARS) {
            text.truncate(cut);
            text.push('…');
        }
        text
    }
}

/// The body for a format: `json` → `{"type":"approval.requested","approval":<Notice>}`;
/// `slack` → an incoming-webhook message (one-line `text` fallback and blocks: the summary,
/// requester, route, operation and expiry, then the link); `teams` → a message with an
/// Adaptive Card (title, summary, facts, and a "Review" button opening the link).
pub fn payload(format: WebhookFormat, notice: &Notice) -> Value {
    match format {
        WebhookFormat::Json => json!({ "type": EVENT, "approval": notice }),
        WebhookFormat::Slack => slack(notice),
        WebhookFormat::Teams => teams(notice),
    }
}

fn slack(notice: &Notice) -> Value {
    let summary = one_line(&shorten(&notice.summary, MAX_CHAT_SUMMARY_CHARS));
    let expires = expiry(notice.expires_at);
    let text = format!(
        "Approval requested by {} on {} ({}): {} {}",
        one_line(&notice.requester),
        one_line(&notice.route),
        one_line(&notice.operation),
        summary,
        notice.link
    );
    let section = format!(
        "*Approval requested:* {}\n*Requester:* {}\n*Route:* {}   *Operation:* {}\n*Expires:* {}",
        slack_escape(&summary),
        slack_escape(&notice.requester),
        slack_escape(&notice.route),
        slack_escape(&notice.operation),
        expires
    );
    let link = format!(
        "<{}|Review approval request {}>",
        slack_escape(&notice.link).replace('|', "%7C"),
        slack_escape(&notice.id).replace(['|', '>'], "")
    );
    json!({
        "text": slack_escape(&text),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": section } },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": link } ] },
        ],
    })
}

fn teams(notice: &Notice) -> Value {
    let groups = if notice.approver_groups.is_empty() {
        "—".to_string()
    } else {
        notice.approver_groups.join(", ")
    };
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "type": "AdaptiveCard",
                "version": "1.4",
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "body": [
                    {
                        "type": "TextBlock",
                        "text": "Approval requested",
                        "weight": "Bolder",
                        "size": "Medium",
                        "wrap": true,
                    },
                    {
                        "type": "TextBlock",
                        "text": shorten(&notice.summary, MAX_CHAT_SUMMARY_CHARS),
                        "wrap": true,
                    },
                    {
                        "type": "FactSet",
                        "facts": [
                            { "title": "Requester", "value": notice.requester },
                            { "title": "Route", "value": notice.route },
                            { "title": "Operation", "value": notice.operation },
                            { "title": "Approver groups", "value": groups },
                            { "title": "Expires", "value": expiry(notice.expires_at) },
                        ],
                    },
                ],
                "actions": [{ "type": "Action.OpenUrl", "title": "Review", "url": notice.link }],
            },
        }],
    })
}

/// Slack's three control characters, escaped so text cannot become a link or a mention.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC, to the second.
fn expiry(ms: u64) -> String {
    match UNIX_EPOCH.checked_add(Duration::from_millis(ms)) {
        Some(at) => humantime::format_rfc3339_seconds(at).to_string(),
        None => ms.to_string(),
    }
}

/// A `Retry-After` in seconds (an HTTP date is ignored: the backoff applies), at most 60 s.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_WAIT))
}

/// A shared secret from a file, without its trailing newline. Errors name the file only.
fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("the secret file {} is empty", path.display()));
    }
    Ok(bytes)
}

/// `localhost`, or an IP address on loopback (`127.0.0.0/8`, `[::1]`).
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    /// How the test receiver answers one request.
    #[derive(Clone, Copy)]
    enum Reply {
        Status(u16),
        /// A status with a `Retry-After` header.
        RetryAfter(u16, &'static str),
        /// No answer for 5 s.
        Hang,
    }

    /// A request the receiver got.
    struct Received {
        method: String,
        path_and_query: String,
        headers: http::HeaderMap,
        body: Bytes,
        at: Instant,
    }

    /// A local HTTP receiver answering with a script (the last reply repeats).
    struct Receiver {
        addr: SocketAddr,
        log: Arc<Mutex<Vec<Received>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl Receiver {
        async fn start(script: &[Reply]) -> Receiver {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let log = Arc::new(Mutex::new(Vec::new()));
            let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
            let task = tokio::spawn({
                let log = log.clone();
                async move {
                    // Bounded: no test sends more than a handful of requests.
                    for _ in 0..32 {
                        let Ok((stream, _)) = listener.accept().await else {
                            return;
                        };
                        let (log, script) = (log.clone(), script.clone());
                        let service = service_fn(move |request: hyper::Request<Incoming>| {
                            let (log, script) = (log.clone(), script.clone());
                            async move {
                                let at = Instant::now();
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                let reply = {
                                    let mut script = script.lock().unwrap();
                                    if script.len() > 1 {
                                        script.pop_front().unwrap()
                                    } else {
                                        script.front().copied().unwrap_or(Reply::Status(200))
                                    }
                                };
                                log.lock().unwrap().push(Received {
                                    method: parts.method.to_string(),
                                    path_and_query: parts.uri.to_string(),
                                    headers: parts.headers,
                                    body,
                                    at,
                                });
                                let mut response = hyper::Response::builder();
                                response = match reply {
                                    Reply::Status(status) => response.status(status),
                                    Reply::RetryAfter(status, after) => {
                                        response.status(status).header(header::RETRY_AFTER, after)
                                    }
                                    Reply::Hang => {
                                        tokio::time::sleep(Duration::from_secs(5)).await;
                                        response.status(200)
                                    }
                                };
                                let body = Full::new(Bytes::from_static(b"{\"ok\":true}"));
                                Ok::<_, Infallible>(response.body(body).unwrap())
                            }
                        });
                        tokio::spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            });
            Receiver { addr, log, task }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn received(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
            self.log.lock().unwrap()
        }
    }

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "portcullis-notify-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn hook(name: &str, url: &str) -> WebhookConfig {
        WebhookConfig {
            name: name.into(),
            url: url.into(),
            format: WebhookFormat::Json,
            routes: vec![],
            approver_groups: vec![],
            max_attempts: 5,
            backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            ca_file: None,
            secret_file: None,
        }
    }

    fn notice() -> Notice {
        Notice {
            id: "apr-7f3a".into(),
            route: "arm".into(),
            operation: "resource-group.delete".into(),
            requester: "alice@example.com (https://idp.example.com)".into(),
            summary: "Delete resource group prod-rg".into(),
            approver_groups: vec!["ops".into(), "sre".into()],
            expires_at: 1_700_000_000_000,
            request: json!({
                "method": "DELETE",
                "url": "https://management.azure.com/subscriptions/s/resourceGroups/prod-rg",
                "headers": { "authorization": "***" },
                "body": { "size": 0, "sha256": "e3b0c442" },
            }),
            link: "https://gateway.example.com/approvals/apr-7f3a".into(),
        }
    }

    fn notifier(hooks: &[WebhookConfig]) -> Notifier {
        Notifier::new(hooks, Path::new("/nonexistent")).unwrap()
    }

    async fn deliver(notifier: &Notifier, target: &str) -> (bool, Vec<Attempt>) {
        let mut attempts = Vec::new();
        let delivered = notifier
            .deliver(target, &notice(), |a| attempts.push(a.clone()))
            .await;
        (delivered, attempts)
    }

    #[tokio::test]
    async fn delivered_on_the_first_try_with_headers_and_a_valid_signature() {
        let receiver = Receiver::start(&[Reply::Status(204)]).await;
        let dir = TempDir::new();
        std::fs::write(dir.0.join("hook.secret"), "s3cret-key\n").unwrap();
        let mut config = hook("ops", &receiver.url("/hooks/in?channel=approvals"));
        config.secret_file = Some("hook.secret".into()); // relative to the base directory
        let notifier = Notifier::new(&[config], &dir.0).unwrap();

        let (delivered, attempts) = deliver(&notifier, "ops").await;
        assert!(delivered);
        assert_eq!(attempts.len(), 1);
        let a = &attempts[0];
        assert_eq!(
            (a.target.as_str(), a.attempt, a.ok, a.status, a.last),
            ("ops", 1, true, Some(204), true)
        );
        assert!(a.error.is_none());

        let received = receiver.received();
        assert_eq!(received.len(), 1);
        let r = &received[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path_and_query, "/hooks/in?channel=approvals");
        let h = |name: &str| r.headers.get(name).unwrap().to_str().unwrap().to_string();
        assert_eq!(h("content-type"), "application/json");
        assert_eq!(
            h("user-agent"),
            format!("portcullis/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(h("x-portcullis-event"), "approval.requested");
        assert_eq!(h("x-portcullis-delivery"), "apr-7f3a-ops");
        let signature = h("x-portcullis-signature");
        let hex_mac = signature.strip_prefix("sha256=").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret-key").unwrap();
        mac.update(&r.body);
        mac.verify_slice(&hex::decode(hex_mac).unwrap()).unwrap();

        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["type"], "approval.requested");
        let approval = &body["approval"];
        assert_eq!(approval["id"], "apr-7f3a");
        assert_eq!(approval["route"], "arm");
        assert_eq!(approval["operation"], "resource-group.delete");
        assert_eq!(
            approval["requester"],
            "alice@example.com (https://idp.example.com)"
        );
        assert_eq!(approval["summary"], "Delete resource group prod-rg");
        assert_eq!(approval["approver_groups"], json!(["ops", "sre"]));
        assert_eq!(approval["expires_at"], 1_700_000_000_000u64);
        assert_eq!(approval["request"]["method"], "DELETE");
        assert_eq!(
            approval["link"],
            "https://gateway.example.com/approvals/apr-7f3a"
        );
    }

    #[tokio::test]
    async fn without_a_secret_no_signature_is_sent() {
        let receiver = Receiver::start(&[Reply::Status(200)]).await;
        let notifier = notifier(&[hook("ops", &receiver.url("/"))]);
        assert!(deliver(&notifier, "ops").await.0);
        assert!(
            !receiver.received()[0]
                .headers
                .contains_key("x-portcullis-signature")
        );
    }

    #[tokio::test]
    async fn retried_after_503s_with_growing_waits() {
        let receiver =
            Receiver::start(&[Reply::Status(503), Reply::Status(503), Reply::Status(200)]).await;
        let mut config = hook("ops", &receiver.url("/in"));
        config.backoff = Duration::from_millis(40);
        let notifier = notifier(&[config]);

        let (delivered, attempts) = deliver(&notifier, "ops").await;
        assert!(delivered);
        let flags: Vec<_> = attempts
            .iter()
            .map(|a| (a.attempt, a.ok, a.status, a.last))
            .collect();
        assert_eq!(
            flags,
            [
                (1, false, Some(503), false),
                (2, false, Some(503), false),
                (3, true, Some(200), true)
            ]
        );
        assert_eq!(
            attempts[0].error.as_deref(),
            Some("HTTP 503 Service Unavailable")
        );
        assert!(attempts[2].error.is_none());

        let received = receiver.received();
        assert_eq!(received.len(), 3);
        let first_wait = received[1].at - received[0].at;
        let second_wait = received[2].at - received[1].at;
        assert!(first_wait >= Duration::from_millis(40), "{first_wait:?}");
        assert!(second_wait >= Duration::from_millis(80), "{second_wait:?}");
        // The same delivery id every time: receivers can drop duplicates.
        assert!(
            received
                .iter()
                .all(|r| r.headers["x-portcullis-delivery"] == "apr-7f3a-ops")
        );
    }

    #[tokio::test]
    async fn a_client_error_stops_at_once() {
        let receiver = Receiver::start(&[Reply::Status(400), Reply::Status(200)]).await;
        let notifier = notifier(&[hook("ops", &receiver.url("/in"))]);
        let (delivered, attempts) = deliver(&notifier, "ops").await;
        assert!(!delivered);
        assert_eq!(attempts.len(), 1);
        let a = &attempts[0];
        assert_eq!(
            (a.attempt, a.ok, a.status, a.last),
            (1, false, Some(400), true)
        );
        assert_eq!(a.error.as_deref(), Some("HTTP 400 Bad Request"));
        assert_eq!(receiver.received().len(), 1);
    }

    #[tokio::test]
    async fn server_errors_until_max_attempts_give_up() {
        let receiver = Receiver::start(&[Reply::Status(500), Reply::Status(502)]).await;
        let mut config = hook("ops", &receiver.url("/in"));
        config.max_attempts = 4;
        let notifier = notifier(&[config]);
        let (delivered, attempts) = deliver(&notifier, "ops").await;
        assert!(!delivered);
        assert_eq!(receiver.received().len(), 4);
        assert_eq!(attempts.len(), 4);
        assert!(attempts.iter().all(|a| !a.ok));
        let lasts: Vec<_> = attempts.iter().map(|a| a.last).collect();
        assert_eq!(lasts, [false, false, false, true]);
        assert_eq!(attempts[3].status, Some(502));
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_and_the_path_is_never_shown() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let url = format!("http://{addr}/services/T000/B000/XXXXSECRETXXXX?token=hush");
        let mut config = hook("slack", &url);
        config.max_attempts = 3;
        let notifier = notifier(&[config]);
        let (delivered, attempts) = deliver(&notifier, "slack").await;
        assert!(!delivered);
        assert_eq!(attempts.len(), 3);
        for (i, a) in attempts.iter().enumerate() {
            assert_eq!(a.attempt, i as u32 + 1);
            assert_eq!(a.status, None);
            assert_eq!(a.last, i == 2);
            let error = a.error.as_deref().unwrap();
            assert!(error.contains(&format!("http://{addr}")), "{error}");
            assert!(error.contains("cannot connect"), "{error}");
            for secret in ["services", "SECRET", "token", "hush", "/T000"] {
                assert!(!error.contains(secret), "{error}");
            }
        }
    }

    #[tokio::test]
    async fn an_attempt_without_an_answer_times_out() {
        let receiver = Receiver::start(&[Reply::Hang]).await;
        let mut config = hook("ops", &receiver.url("/in/secret-path"));
        config.max_attempts = 2;
        config.timeout = Duration::from_millis(100);
        let notifier = notifier(&[config]);
        let started = Instant::now();
        let (delivered, attempts) = deliver(&notifier, "ops").await;
        assert!(!delivered);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(attempts.len(), 2);
        let error = attempts[1].error.as_deref().unwrap();
        assert_eq!(
            error,
            format!("no answer from http://{} within 100ms", receiver.addr)
        );
    }

    #[tokio::test]
    async fn retry_after_on_429_replaces_the_backoff() {
        let receiver = Receiver::start(&[Reply::RetryAfter(429, "0"), Reply::Status(200)]).await;
        let mut config = hook("ops", &receiver.url("/in"));
        config.backoff = Duration::from_secs(30); // would outlast the test
        let notifier = notifier(&[config]);
        let started = Instant::now();
        let (delivered, attempts) = deliver(&notifier, "ops").await;
        assert!(delivered);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0].status, Some(429));
        assert!(!attempts[0].last);
    }

    #[test]
    fn retry_after_is_seconds_at_most_a_minute() {
        let headers = |value: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::RETRY_AFTER, value.parse().unwrap());
            h
        };
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers(" 0 ")), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("3600")), Some(MAX_WAIT));
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&http::HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn an_unknown_webhook_is_reported_once() {
        let notifier = notifier(&[]);
        let (delivered, attempts) = deliver(&notifier, "gone").await;
        assert!(!delivered);
        assert_eq!(attempts.len(), 1);
        assert_eq!(
            (attempts[0].attempt, attempts[0].last, attempts[0].ok),
            (0, true, false)
        );
    }

    #[tokio::test]
    async fn a_slack_webhook_receives_a_slack_message() {
        let receiver = Receiver::start(&[Reply::Status(200)]).await;
        let mut config = hook("chat", &receiver.url("/services/x"));
        config.format = WebhookFormat::Slack;
        let notifier = notifier(&[config]);
        assert!(deliver(&notifier, "chat").await.0);
        let body: Value = serde_json::from_slice(&receiver.received()[0].body).unwrap();
        assert_eq!(body, payload(WebhookFormat::Slack, &notice()));
    }

    #[test]
    fn slack_payload_has_a_fallback_text_blocks_and_the_link() {
        let mut n = notice();
        n.summary = "Delete <!channel> & <https://evil.example|this>\nnow".into();
        let p = payload(WebhookFormat::Slack, &n);
        let text = p["text"].as_str().unwrap();
        assert!(!text.contains('\n'));
        assert!(text.contains("alice@example.com"));
        assert!(text.contains(&n.link));
        assert!(!text.contains('<'), "{text}");
        let blocks = p["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0]["type"], "section");
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        let section = blocks[0]["text"]["text"].as_str().unwrap();
        assert!(
            section.contains("Delete &lt;!channel&gt; &amp; &lt;https://evil.example|this&gt; now")
        );
        for part in [
            "alice@example.com (https://idp.example.com)",
            "arm",
            "resource-group.delete",
            "2023-11-14T22:13:20Z",
        ] {
            assert!(section.contains(part), "{part} in {section}");
        }
        assert_eq!(blocks[1]["type"], "context");
        let link = blocks[1]["elements"][0]["text"].as_str().unwrap();
        assert_eq!(
            link,
            "<https://gateway.example.com/approvals/apr-7f3a|Review approval request apr-7f3a>"
        );
    }

    #[test]
    fn teams_payload_is_an_adaptive_card_with_a_review_button() {
        let p = payload(WebhookFormat::Teams, &notice());
        assert_eq!(p["type"], "message");
        let attachment = &p["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.4");
        assert_eq!(
            card["$schema"],
            "http://adaptivecards.io/schemas/adaptive-card.json"
        );
        assert_eq!(card["body"][0]["type"], "TextBlock");
        assert_eq!(card["body"][1]["text"], "Delete resource group prod-rg");
        let facts = card["body"][2]["facts"].as_array().unwrap();
        assert_eq!(card["body"][2]["type"], "FactSet");
        let fact = |title: &str| {
            facts.iter().find(|f| f["title"] == title).unwrap()["value"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            fact("Requester"),
            "alice@example.com (https://idp.example.com)"
        );
        assert_eq!(fact("Route"), "arm");
        assert_eq!(fact("Operation"), "resource-group.delete");
        assert_eq!(fact("Approver groups"), "ops, sre");
        assert_eq!(fact("Expires"), "2023-11-14T22:13:20Z");
        let action = &card["actions"][0];
        assert_eq!(action["type"], "Action.OpenUrl");
        assert_eq!(action["title"], "Review");
        assert_eq!(
            action["url"],
            "https://gateway.example.com/approvals/apr-7f3a"
        );
    }

    #[test]
    fn targets_filter_by_route_and_approver_group() {
        let mut arm = hook("arm-only", "http://127.0.0.1:9/a");
        arm.routes = vec!["arm".into()];
        let mut ops = hook("ops-only", "http://127.0.0.1:9/b");
        ops.approver_groups = vec!["ops".into()];
        let mut both = hook("arm-ops", "http://127.0.0.1:9/c");
        both.routes = vec!["arm".into(), "storage".into()];
        both.approver_groups = vec!["ops".into()];
        let all = hook("all", "http://127.0.0.1:9/d");
        let notifier = notifier(&[arm, ops, both, all]);
        let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            notifier.targets("arm", &groups(&["sre", "ops"])),
            ["arm-only", "ops-only", "arm-ops", "all"]
        );
        assert_eq!(
            notifier.targets("arm", &groups(&["sre"])),
            ["arm-only", "all"]
        );
        assert_eq!(
            notifier.targets("storage", &groups(&["ops"])),
            ["ops-only", "arm-ops", "all"]
        );
        assert_eq!(notifier.targets("graph", &groups(&[])), ["all"]);
    }

    #[test]
    fn debug_shows_no_url_path_or_query() {
        let mut slack = hook(
            "slack",
            "http://127.0.0.1:8080/services/T000/B000/XXXXSECRET?x=y",
        );
        slack.format = WebhookFormat::Slack;
        let text = format!(
            "{:?}",
            notifier(&[slack, hook("local", "http://localhost/h")])
        );
        assert!(text.contains("\"slack\""), "{text}");
        assert!(text.contains("http://127.0.0.1:8080"), "{text}");
        assert!(text.contains("http://localhost:80"), "{text}");
        for secret in ["services", "SECRET", "x=y", "/h"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn configuration_errors_name_the_webhook_never_the_secret_or_the_path() {
        let dir = TempDir::new();
        let base = dir.0.as_path();

        let mut missing = hook("pager", "http://127.0.0.1:9/in");
        missing.secret_file = Some("absent.secret".into());
        let error = Notifier::new(&[missing], base).unwrap_err();
        assert!(error.contains("\"pager\""), "{error}");
        assert!(
            error.contains(&base.join("absent.secret").display().to_string()),
            "{error}"
        );

        std::fs::write(base.join("empty.secret"), "\n").unwrap();
        let mut empty = hook("pager", "http://127.0.0.1:9/in");
        empty.secret_file = Some(base.join("empty.secret"));
        let error = Notifier::new(&[empty], base).unwrap_err();
        assert!(
            error.contains("\"pager\"") && error.contains("empty"),
            "{error}"
        );

        // The secret is read, then the CA bundle fails: the error names the bundle only.
        std::fs::write(base.join("good.secret"), "TOPSECRETVALUE").unwrap();
        let mut bad_ca = hook("pager", "https://hooks.example.com/services/PATHSECRET");
        bad_ca.secret_file = Some("good.secret".into());
        bad_ca.ca_file = Some("absent-ca.pem".into());
        let error = Notifier::new(&[bad_ca], base).unwrap_err();
        assert!(
            error.contains("\"pager\"") && error.contains("absent-ca.pem"),
            "{error}"
        );
        assert!(
            !error.contains("TOPSECRETVALUE") && !error.contains("PATHSECRET"),
            "{error}"
        );

        let rejected = [
            ("ftp://hooks.example.com/PATHSECRET", "https://"),
            ("http://hooks.example.com/PATHSECRET", "loopback"),
            (
                "https://user:pw@hooks.example.com/PATHSECRET",
                "user information",
            ),
            ("/PATHSECRET", "https://"),
            ("not a url PATHSECRET", "not a valid URL"),
        ];
        for (url, reason) in rejected {
            let error = Notifier::new(&[hook("pager", url)], base).unwrap_err();
            assert!(
                error.contains("\"pager\"") && error.contains(reason),
                "{url}: {error}"
            );
            assert!(
                !error.contains("PATHSECRET") && !error.contains("pw"),
                "{error}"
            );
        }

        let twice = [
            hook("a", "http://127.0.0.1:9/"),
            hook("a", "http://[::1]:9/"),
        ];
        assert!(Notifier::new(&twice, base).unwrap_err().contains("twice"));
        let mut zero = hook("a", "http://127.0.0.1:9/");
        zero.max_attempts = 0;
        assert!(
            Notifier::new(&[zero], base)
                .unwrap_err()
                .contains("max_attempts")
        );
    }

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1", "[::2]", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn delivery_can_run_on_another_task() {
        fn assert_send<T: Send>(_: &T) {}
        let notifier = notifier(&[]);
        let n = notice();
        assert_send(&notifier.deliver("x", &n, |_| {}));
    }
}
