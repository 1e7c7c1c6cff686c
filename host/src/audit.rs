//! What the gateway records in its signed audit log (`portcullis-audit`): the log opened from
//! `[audit]`, a request's trail (decision before forwarding, completion after the response),
//! and the gateway's own events. Records carry identities (`iss`, `sub`), never a token, key,
//! Authorization header or SAS signature.
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::Response;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
pub use portcullis_audit::har::Entry;
use portcullis_audit::har::{Recorder, RecorderOptions};
use portcullis_audit::note::SigningKey;
use portcullis_audit::record::Fields;
use portcullis_audit::writer::{AuditError, AuditLog, Durability, Faults, Opened, Options, Wait};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;

use crate::auth::Caller;
use crate::config::{AuditConfig, AuditDurability, Config, OnAuditFailure};
use crate::error::GatewayError;
use crate::plugin::{Principal, Step, StepResult};
use crate::proxy::{Body, BodyError};

/// The open audit log, the session recorder, and the operator's failure policy. Outlives
/// reloads.
#[derive(Debug)]
pub struct Audit {
    log: AuditLog,
    on_failure: OnAuditFailure,
    recorder: Option<Arc<Recorder>>,
    /// Most response bytes kept for a recording.
    recorded_body: usize,
    /// Injected failures (drills and tests).
    pub faults: Arc<Faults>,
}

impl Audit {
    /// Open (and recover) the log of `[audit]`; the signing key is read from its file.
    pub fn open(config: &Config, settings: &AuditConfig) -> Result<(Audit, Opened), String> {
        let key_file = config.path(&settings.signing_key_file);
        let key = SigningKey::read(&key_file, &settings.origin)
            .map_err(|e| format!("audit.signing_key_file: {e}"))?;
        let mut options = Options::new(config.path(&settings.dir), settings.origin.clone(), key);
        options.retiring_key = match &settings.retiring_key_file {
            None => None,
            Some(f) => Some(
                SigningKey::read(&config.path(f), &settings.origin)
                    .map_err(|e| format!("audit.retiring_key_file: {e}"))?,
            ),
        };
        options.durability = match settings.durability {
            AuditDurability::Strict => Durability::Strict,
            AuditDurability::Batched => Durability::Batched {
                interval: settings.fsync_interval,
            },
        };
        options.segment_bytes = settings.segment_size.as_u64();
        options.segment_age = settings.segment_age;
        options.heartbeat = settings.heartbeat;
        let faults = options.faults.clone();
        let recorder = match &config.sessions {
            None => None,
            Some(sessions) => {
                let options = RecorderOptions {
                    blob_threshold: usize::try_from(sessions.blob_threshold.as_u64())
                        .unwrap_or(usize::MAX),
                    max_body: usize::try_from(sessions.max_body.as_u64()).unwrap_or(usize::MAX),
                    ..RecorderOptions::default()
                };
                let recorder = Recorder::open(config.path(&sessions.dir), options)
                    .map_err(|e| format!("sessions: {e}"))?;
                Some(Arc::new(recorder))
            }
        };
        let recorded_body = config.sessions.as_ref().map_or(0, |s| {
            // One byte over the cap tells the recorder the body was larger than it keeps.
            usize::try_from(s.max_body.as_u64())
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        });
        let (log, opened) = AuditLog::open(options).map_err(|e| format!("audit: {e}"))?;
        Ok((
            Audit {
                log,
                on_failure: settings.on_failure,
                recorder,
                recorded_body,
                faults,
            },
            opened,
        ))
    }

    /// Whether request/response pairs are recorded.
    pub fn recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// Send `response` to the client through a body that hashes (and, when recording, keeps)
    /// what the client receives; when it ends, the recording entry and the completion record
    /// are written. A response whose body breaks off is completed as `aborted`.
    pub fn watch(
        self: &Arc<Self>,
        trail: Trail,
        outcome: &'static str,
        response: Response<Body>,
    ) -> Response<Body> {
        let (parts, body) = response.into_parts();
        let kept = trail.entry.as_ref().map(|_| Vec::new());
        let mut trail = trail;
        if let Some(entry) = trail.entry.as_mut() {
            entry.status = parts.status.as_u16();
            entry.status_text = parts.status.canonical_reason().unwrap_or_default().into();
            entry.response_headers = header_pairs(&parts.headers);
        }
        let watched = Watched {
            inner: body,
            hasher: Sha256::new(),
            bytes: 0,
            kept,
            cap: self.recorded_body,
            finish: Some(Finish {
                audit: self.clone(),
                trail,
                status: parts.status.as_u16(),
                outcome,
            }),
        };
        Response::from_parts(parts, watched.boxed())
    }

    /// Record a gateway event (start, stop, configuration, reload) durably: these are always
    /// fsync'ed, whatever the request durability.
    pub async fn event(&self, kind: &str, fields: Value) -> Result<u64, AuditError> {
        let appended = self.log.append(kind, object(fields), Wait::Synced).await?;
        Ok(appended.seq)
    }

    /// `event`, outside the async runtime.
    pub fn event_blocking(&self, kind: &str, fields: Value) -> Result<u64, AuditError> {
        let appended = self
            .log
            .append_blocking(kind, object(fields), Wait::Synced)?;
        Ok(appended.seq)
    }

    /// Record a request's decision before anything is forwarded. When the log cannot take it,
    /// the request fails with 503 unless the operator chose `allow-and-alert`.
    pub async fn decide(&self, trail: &mut Trail, kind: &'static str) -> Result<(), GatewayError> {
        let fields = trail.decision_fields();
        match self
            .log
            .append_fields(kind, fields, self.log.request_wait())
            .await
        {
            Ok(appended) => {
                trail.decision_seq = Some(appended.seq);
                Ok(())
            }
            Err(e) => match self.on_failure {
                OnAuditFailure::Deny => Err(GatewayError::AuditUnavailable(e.to_string())),
                OnAuditFailure::AllowAndAlert => {
                    tracing::error!(
                        request_id = %trail.request_id,
                        error = %e,
                        "ALERT: a request is forwarded without its audit record (audit.on_failure = \"allow-and-alert\")"
                    );
                    Ok(())
                }
            },
        }
    }

    /// Record how a request ended. The response has left (or is leaving): a failure here is
    /// logged, it cannot change the answer.
    pub async fn complete(&self, trail: &Trail, end: End) {
        self.send_completion(&trail.request_id, trail.completion_fields(&end))
            .await;
    }

    async fn send_completion(&self, request_id: &str, fields: Fields) {
        if let Err(e) = self.log.submit_fields(COMPLETION, fields).await {
            tracing::error!(%request_id, error = %e, "audit completion record lost");
        }
    }

    /// `complete`, from a response body as it ends, where nothing can wait: the record is
    /// taken at once when the writer can, else a task waits to send it.
    fn complete_now(self: Arc<Self>, trail: &Trail, end: &End) {
        let fields = trail.completion_fields(end);
        let Err(unsent) = self.log.try_submit_fields(COMPLETION, fields) else {
            return;
        };
        let request_id = trail.request_id.clone();
        let Ok(runtime) = Handle::try_current() else {
            tracing::error!(%request_id, "audit completion record lost: no runtime");
            return;
        };
        runtime.spawn(async move { self.send_completion(&request_id, unsent.fields).await });
    }

    /// Flush, sign a final checkpoint and stop the writer.
    pub fn close(&self) -> Result<(), AuditError> {
        self.log.close()
    }

    /// The durability mode, as written in the log.
    pub fn durability(&self) -> &'static str {
        self.log.durability().name()
    }

    /// Whether the last write failed.
    pub fn failing(&self) -> bool {
        self.log.failing()
    }
}

/// The kind of the record that says how a request ended.
const COMPLETION: &str = "request.completion";

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => Map::from_iter([("value".to_string(), other)]),
    }
}

/// A path and query with the values of credential parameters (SAS `sig`, tokens, keys…)
/// replaced by `[REDACTED]`: the recordings' rule (`har::is_secret_query_param`), so the audit
/// log and the recordings never disagree on what is a secret.
pub fn redact_target(path_and_query: &str) -> String {
    portcullis_audit::har::redact_url(path_and_query)
}

/// What the audit log learns about one request as it goes down the path.
#[derive(Debug, Clone)]
pub struct Trail {
    /// The gateway's request id.
    pub request_id: String,
    /// When the request arrived.
    pub started: Instant,
    /// The client's address and whether it used TLS.
    pub source: (SocketAddr, bool),
    /// Method and target (credential parameters redacted).
    pub method: String,
    /// Host and path (and redacted query).
    pub target: String,
    /// The matched route.
    pub route: Option<String>,
    /// The normalized operation.
    pub operation: Option<String>,
    /// Who called (the verified caller, shared with the token cache).
    pub caller: Option<Arc<Caller>>,
    /// The plugins' steps.
    pub steps: Vec<Step>,
    /// `allow`, `deny`, `approval-required`, `approved` or `error`.
    pub decision: &'static str,
    /// The plugin that denied or asked for approval.
    pub by: Option<String>,
    /// The deny's or the failure's code.
    pub code: Option<String>,
    /// The deny's reason (the plugin's public text).
    pub reason: Option<String>,
    /// The approval request the decision rests on, when a plugin asked for one.
    pub approval: Option<String>,
    /// The decision record's seq, once written.
    pub decision_seq: Option<u64>,
    /// The upstream's status and request id.
    pub upstream: Option<(u16, Option<String>)>,
    /// What masking found (kind, location, count; never a value).
    pub findings: Vec<Value>,
    /// The recording entry being filled in, when sessions are recorded.
    pub entry: Option<Box<Entry>>,
}

/// How a request ended, for its completion record.
#[derive(Debug, Clone, Default)]
pub struct End {
    /// The status the client got.
    pub status: u16,
    /// Bytes of the response body sent, and their SHA-256 (as the client saw them).
    pub response_body: Option<(u64, [u8; 32])>,
    /// `ok`, `error` (a failure answered by the gateway) or `aborted` (the body stream broke
    /// or the client went away).
    pub outcome: &'static str,
    /// The recording entry: session, seq and hash.
    pub recording: Option<(String, u64, [u8; 32])>,
}

impl Trail {
    /// A trail for a request just received.
    pub fn new(request_id: &str, source: (SocketAddr, bool), method: &str, target: String) -> Self {
        Trail {
            request_id: request_id.to_string(),
            started: Instant::now(),
            source,
            method: method.to_string(),
            target,
            route: None,
            operation: None,
            caller: None,
            steps: Vec::new(),
            decision: "allow",
            by: None,
            code: None,
            reason: None,
            approval: None,
            decision_seq: None,
            upstream: None,
            findings: Vec::new(),
            entry: None,
        }
    }

    fn decision_fields(&self) -> Fields {
        let record = DecisionRecord {
            request_id: &self.request_id,
            route: self.route.as_deref(),
            operation: self.operation.as_deref(),
            method: &self.method,
            target: &self.target,
            source: SourceRecord {
                addr: self.source.0,
                tls: self.source.1,
            },
            principal: self.caller.as_deref().map(principal_record),
            plugins: StepRecords(&self.steps),
            decision: self.decision,
            by: self.by.as_deref(),
            code: self.code.as_deref(),
            reason: self.reason.as_deref(),
            approval: self.approval.as_deref(),
        };
        fields(&record)
    }

    fn completion_fields(&self, end: &End) -> Fields {
        let record = CompletionRecord {
            request_id: &self.request_id,
            decision_seq: self.decision_seq,
            status: end.status,
            outcome: end.outcome,
            latency_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            upstream: self
                .upstream
                .as_ref()
                .map(|(status, request_id)| UpstreamRecord {
                    status: *status,
                    request_id: request_id.as_deref(),
                }),
            findings: &self.findings,
            bodies: end.response_body.as_ref().map(|(bytes, sha)| BodiesRecord {
                response_bytes: *bytes,
                response_sha256: Hex(sha),
            }),
            recording: end
                .recording
                .as_ref()
                .map(|(session, seq, hash)| RecordingRecord {
                    session,
                    seq: *seq,
                    hash: portcullis_audit::record::encode_hash(hash),
                }),
            error: self.code.as_deref().filter(|_| end.outcome != "ok"),
        };
        fields(&record)
    }
}

/// A record's fields, serialised on the request task (the writer thread only frames them).
fn fields(record: &impl serde::Serialize) -> Fields {
    // Plain structs of strings and numbers always serialise.
    Fields::from_serialize(record).unwrap_or_default()
}

/// `request.decision` and `auth.failed`: what was asked, by whom, and what was decided.
#[derive(serde::Serialize)]
struct DecisionRecord<'a> {
    request_id: &'a str,
    route: Option<&'a str>,
    operation: Option<&'a str>,
    method: &'a str,
    target: &'a str,
    source: SourceRecord,
    principal: Option<&'a RawValue>,
    plugins: StepRecords<'a>,
    decision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct SourceRecord {
    addr: SocketAddr,
    tls: bool,
}

/// The caller's principal as a decision records it, serialised once per verified token (kept
/// with the cached caller): a decision record splices the bytes.
fn principal_record(caller: &Caller) -> &RawValue {
    caller.audit_record.get_or_init(|| {
        let p = &caller.principal;
        let record = PrincipalRecord {
            iss: &p.issuer,
            sub: &p.subject,
            tenant: p.tenant.as_deref(),
            app_id: p.app_id.as_deref(),
            roles: &p.roles,
        };
        // Strings and a list of strings always serialise.
        serde_json::value::to_raw_value(&record).expect("a principal record serialises")
    })
}

/// The caller, by identity only: never a token.
#[derive(serde::Serialize)]
struct PrincipalRecord<'a> {
    iss: &'a str,
    sub: &'a str,
    tenant: Option<&'a str>,
    app_id: Option<&'a str>,
    roles: &'a [String],
}

/// The plugins' steps, serialised straight from the trail (no `Vec` of records per request).
struct StepRecords<'a>(&'a [Step]);

impl serde::Serialize for StepRecords<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|s| {
            let (verdict, error) = match &s.result {
                StepResult::Verdict(v) => (*v, None),
                StepResult::FailedOpen(e) => ("failed-open", Some(e.as_str())),
            };
            StepRecord {
                name: &s.plugin.name,
                version: &s.plugin.version,
                sha256: &s.plugin.sha256,
                hook: s.hook.name(),
                verdict,
                error,
            }
        }))
    }
}

/// One step: which plugin (name, version, sha256), which hook (its WIT name, e.g.
/// `on-request`), and what came of it.
#[derive(serde::Serialize)]
struct StepRecord<'a> {
    name: &'a str,
    version: &'a str,
    sha256: &'a str,
    hook: &'static str,
    verdict: &'a str,
    error: Option<&'a str>,
}

/// `request.completion`: how the request ended.
#[derive(serde::Serialize)]
struct CompletionRecord<'a> {
    request_id: &'a str,
    decision_seq: Option<u64>,
    status: u16,
    outcome: &'a str,
    latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<UpstreamRecord<'a>>,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    findings: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    bodies: Option<BodiesRecord<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recording: Option<RecordingRecord<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct UpstreamRecord<'a> {
    status: u16,
    request_id: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct BodiesRecord<'a> {
    response_bytes: u64,
    response_sha256: Hex<'a>,
}

/// A SHA-256 as lowercase hex, serialised from a stack buffer (no `String` per record).
struct Hex<'a>(&'a [u8; 32]);

impl serde::Serialize for Hex<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = [0u8; 64];
        // 64 bytes is exactly the room 32 bytes of hex take.
        hex::encode_to_slice(self.0, &mut text).map_err(serde::ser::Error::custom)?;
        // Hex digits are ASCII.
        serializer.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

#[derive(serde::Serialize)]
struct RecordingRecord<'a> {
    session: &'a str,
    seq: u64,
    hash: String,
}

/// Headers as (name, value) pairs for a recording (values that are not text are skipped).
pub fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// The session a caller's requests are recorded in: one per caller per UTC day, named so an
/// operator can find it (`20261129-<subject>-<8 hex of issuer and subject>`).
pub fn session_id(principal: Option<&Principal>) -> String {
    let day = crate::audit::day(SystemTime::now());
    match principal {
        None => format!("{day}-anonymous"),
        Some(p) => {
            let readable: String = p
                .subject
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .take(48)
                .collect();
            let digest = Sha256::digest(format!("{}\n{}", p.issuer, p.subject).as_bytes());
            format!("{day}-{readable}-{}", &hex::encode(digest)[..8])
        }
    }
}

/// `YYYYMMDD` (UTC).
fn day(at: SystemTime) -> String {
    let text = portcullis_audit::record::format_ts(at);
    text.get(..10).unwrap_or("0000-00-00").replace('-', "")
}

/// What is left to do when a watched response ends.
struct Finish {
    audit: Arc<Audit>,
    trail: Trail,
    status: u16,
    outcome: &'static str,
}

/// A response body on its way to the client, hashed as it streams.
struct Watched {
    inner: Body,
    hasher: Sha256,
    bytes: u64,
    /// The body as sent, for the recording (up to `cap` bytes).
    kept: Option<Vec<u8>>,
    cap: usize,
    finish: Option<Finish>,
}

impl Watched {
    fn end(&mut self, outcome: Option<&'static str>) {
        let Some(finish) = self.finish.take() else {
            return;
        };
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        let end = End {
            status: finish.status,
            response_body: Some((self.bytes, digest)),
            outcome: outcome.unwrap_or(finish.outcome),
            recording: None,
        };
        let mut trail = finish.trail;
        if let Some(entry) = trail.entry.as_mut() {
            entry.response_body = self
                .kept
                .take()
                .filter(|b| !b.is_empty() || self.bytes == 0);
            entry.duration = trail.started.elapsed();
        }
        let audit = finish.audit;
        if trail.entry.is_none() || audit.recorder.is_none() {
            audit.complete_now(&trail, &end);
            return;
        }
        let Ok(runtime) = Handle::try_current() else {
            tracing::error!(request_id = %trail.request_id, "audit completion record lost: no runtime");
            return;
        };
        // The recording entry is written first: its hash goes in the completion record.
        runtime.spawn(async move {
            let mut end = end;
            if let (Some(recorder), Some(entry)) = (&audit.recorder, trail.entry.take()) {
                let mut entry = *entry;
                entry.audit_seq = trail.decision_seq;
                entry.findings = Value::Array(trail.findings.clone());
                match recorder.record(entry).await {
                    Ok(recorded) => {
                        end.recording = Some((recorded.session, recorded.seq, recorded.hash));
                    }
                    Err(e) => {
                        tracing::error!(request_id = %trail.request_id, error = %e, "session recording failed");
                    }
                }
            }
            audit.complete(&trail, end).await;
        });
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.hasher.update(data);
                    this.bytes += data.len() as u64;
                    if let Some(kept) = this.kept.as_mut() {
                        let room = this.cap.saturating_sub(kept.len());
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.end(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.end(Some("aborted"));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // Dropped before its end: the client went away, or the body was never polled (a HEAD,
        // an empty body hyper did not read).
        let outcome = match self.inner.is_end_stream() {
            true => None,
            false => Some("aborted"),
        };
        self.end(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_parameters_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_target("/c/b?comp=list&sig=abc%2Bdef&SE=2026&Signature=x"),
            "/c/b?comp=list&sig=[REDACTED]&SE=2026&Signature=[REDACTED]"
        );
        assert_eq!(redact_target("/c/b"), "/c/b");
    }
}
