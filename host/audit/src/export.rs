//! `portcullis audit export --format ocsf`: the audit log's records as OCSF API Activity events
//! (class 6003, category 6 Application Activity), one JSON object per line, for a SIEM
//! (Microsoft Sentinel, Splunk), each pointing back to the record it came from.
//!
//! The export is not the verifier: it reads the segments in number order, one line at a time,
//! and maps what it can read. Lines that are not records are skipped and counted in
//! [`ExportSummary`]; nothing half-read is ever written. Run `portcullis audit verify` first:
//! only the verifier says whether the log is whole.
//!
//! # Schema version
//!
//! Events declare OCSF [`OCSF_VERSION`] (1.4.0), the first version in which API Activity has
//! `http_response` and every class takes the `security_control` profile (`action_id`,
//! `disposition_id`); `actor.app_uid` dates from 1.2.0 and `actor.idp.issuer`/`tenant_uid` from
//! 1.4.0. Only attributes of that version are written; everything else goes to `unmapped`.
//!
//! # Which records are exported
//!
//! Every record but the segment markers (`segment.open`, `segment.close`): they describe the
//! log's files, not anything that happened, and the back-references below already locate every
//! event. Every other type, including types this version does not know (`approval.*`), is
//! exported: the request types with a full mapping, the rest with a generic one. All are class
//! 6003; `auth.failed` stays API Activity too (Authentication 3002 requires a `user`, which a
//! failed authentication does not have), so a SIEM needs one table for the whole log.
//!
//! # Back-references (every event)
//!
//! | OCSF | from |
//! |---|---|
//! | `unmapped.seq`, `unmapped.log`, `unmapped.epoch`, `unmapped.type` | the record's head |
//! | `unmapped.leaf` | base64 `SHA-256(0x00 ‖ line)`: the leaf the Merkle tree and checkpoints cover |
//! | `unmapped.segment`, `metadata.log_name` | the segment's file name (set by [`export_ocsf`]) |
//! | `metadata.uid` | `id` |
//! | `metadata.sequence` | `seq`, when it fits OCSF's 32-bit `integer_t` (`unmapped.seq` always) |
//! | `metadata.event_code` | `type` |
//! | `metadata.original_time` | `ts` as written; `time` is it in epoch milliseconds |
//! | `unmapped.fields` | the record's own fields that have no OCSF attribute, by their names |
//!
//! # Request records (`request.decision`, `request.completion`, `auth.failed`)
//!
//! | OCSF | from |
//! |---|---|
//! | `activity_id` | `method`: POST Create, GET/HEAD/OPTIONS Read, PUT/PATCH Update, DELETE Delete, any other Other; no method Unknown |
//! | `api.operation` | `operation`, else `method`, else the record type |
//! | `api.request.uid`, `metadata.correlation_uid` | `request_id` (joins a decision to its completion) |
//! | `api.service.name` | `route` |
//! | `http_request.http_method`, `.url.{hostname,port,path,query_string,scheme}` | `method`, `target` |
//! | `dst_endpoint.{hostname or ip, port}` | the host of `target` |
//! | `src_endpoint.{ip, port}` | `source.addr` (`source.tls` stays in `unmapped.fields.source`) |
//! | `actor.user.uid`, `actor.idp.{issuer, tenant_uid}`, `actor.app_uid` | `principal.{sub, iss, tenant, app_id}` (`roles` stay unmapped) |
//!
//! `request.decision`: `actor.authorizations[0]` = `{decision, policy.name: rule}`;
//! `status_code` = `code`, `status_detail` = `reason`; `by` and `plugins` stay unmapped.
//!
//! | `decision` | `status_id` | `action_id` | `disposition_id` | `severity_id` |
//! |---|---|---|---|---|
//! | `allow` | 1 Success | 1 Allowed | 1 Allowed | 1 Informational |
//! | `deny` | 2 Failure | 2 Denied | 2 Blocked | 2 Low |
//! | `approval-required` | 99 Other | 0 Unknown | 14 Delayed | 1 Informational |
//!
//! `request.completion`: `http_response.code` = `status`, `http_response.body_length` =
//! `bodies.response_bytes`, `duration` = `latency_us` / 1000 (ms; `latency_us` also stays);
//! `status_id` Failure if `outcome` is `error` or `status` ≥ 400, else Success if either is
//! known; `error` is `status_code` and `api.response.error`; severity Informational. The
//! decision, upstream, findings, body hashes and recording binding stay in `unmapped.fields`.
//!
//! `auth.failed`: status Failure, action Denied, disposition Blocked, severity 3 Medium,
//! `status_detail` = `reason`.
//!
//! # Other records
//!
//! Activity 99 Other, `api.operation` = the record type, `actor.app_name` = "Portcullis" (the
//! gateway wrote them), `request_id` (if any) as above, all their fields in `unmapped.fields`.
//! `gateway.start`, `gateway.stop`, `config.loaded`, `heartbeat`, `key.rotated` are Success,
//! Informational; `log.recovered` Success, Medium (a crash or a cut); `config.rejected` Failure,
//! Low, its `error` the `status_detail`; any other type Unknown status, Informational.
//!
//! Fields named like credentials (`authorization`, `token`, `cookie`, …) are dropped wherever
//! they occur in what is copied: the log never holds them, and the export makes sure.
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_json::{Map, Value, json};

use crate::record::{self, HEAD_KEYS, Record};
use crate::segment;

/// The OCSF schema version every event declares in `metadata.version`.
pub const OCSF_VERSION: &str = "1.4.0";

/// OCSF class API Activity.
pub const CLASS_UID: u64 = 6003;

/// OCSF category Application Activity.
pub const CATEGORY_UID: u64 = 6;

/// `metadata.product.name` and `.vendor_name`.
pub const PRODUCT: &str = "Portcullis";

/// Record types that are not exported: the log's own structure.
pub const NOT_EXPORTED: [&str; 2] = ["segment.open", "segment.close"];

/// The longest line the export reads; anything longer is counted as unparsable and skipped
/// (records hold hashes, never bodies, so real ones are far shorter).
pub const MAX_LINE: usize = 1 << 20;

/// Field names dropped wherever they occur in copied fields (compared in lower case, `-` as
/// `_`).
const CREDENTIAL_KEYS: [&str; 15] = [
    "authorization",
    "proxy_authorization",
    "cookie",
    "set_cookie",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "password",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "x_api_key",
    "private_key",
];

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Segment files read.
    pub segments: u64,
    /// Lines read (complete or not).
    pub lines: u64,
    /// Events written.
    pub exported: u64,
    /// Records of a type that is not exported ([`NOT_EXPORTED`]).
    pub not_exported: u64,
    /// Complete lines that are not records (not JSON, a bad head, an unknown version, a `ts`
    /// that does not parse, longer than [`MAX_LINE`]).
    pub unparsable: u64,
    /// Last lines of a segment without their `\n`: torn by a crash, or being written now.
    pub incomplete: u64,
    /// The `seq` of the first event written.
    pub first_seq: Option<u64>,
    /// The `seq` of the last event written.
    pub last_seq: Option<u64>,
}

impl ExportSummary {
    /// Whether every line read was either exported or deliberately left out.
    pub fn is_clean(&self) -> bool {
        self.unparsable == 0 && self.incomplete == 0
    }
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exported {} events from {} segments ({} segment markers left out)",
            self.exported, self.segments, self.not_exported
        )?;
        if !self.is_clean() {
            write!(
                f,
                "; skipped {} unparsable and {} incomplete lines: run `portcullis audit verify`",
                self.unparsable, self.incomplete
            )?;
        }
        Ok(())
    }
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The log directory or a segment could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The directory or segment.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The output could not be written.
    #[error("cannot write the export: {0}")]
    Write(#[source] io::Error),
}

/// Export every record of the log in `dir` as OCSF, one JSON object per line, segment by
/// segment in number order, one line at a time (memory stays bounded by [`MAX_LINE`]).
/// Unreadable lines are skipped and counted, never written.
pub fn export_ocsf(dir: &Path, out: &mut dyn Write) -> Result<ExportSummary, ExportError> {
    let read_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Read { path, source }
    };
    let mut summary = ExportSummary::default();
    let mut line = Vec::new();
    let mut event = Vec::new();
    for (_, path) in segment::list(dir).map_err(read_error(dir))? {
        summary.segments += 1;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut reader = BufReader::new(File::open(&path).map_err(read_error(&path))?);
        loop {
            let read = read_line(&mut reader, &mut line).map_err(read_error(&path))?;
            if matches!(read, Line::End) {
                break;
            }
            summary.lines += 1;
            match read {
                Line::TooLong => summary.unparsable += 1,
                Line::Incomplete => summary.incomplete += 1,
                Line::End | Line::Complete => {}
            }
            if !matches!(read, Line::Complete) {
                continue;
            }
            let Some(record) = Record::parse(&line).ok().filter(readable) else {
                summary.unparsable += 1;
                continue;
            };
            let Some(mut value) = to_ocsf(&record) else {
                summary.not_exported += 1;
                continue;
            };
            value["unmapped"]["segment"] = Value::from(name.as_str());
            value["metadata"]["log_name"] = Value::from(name.as_str());
            event.clear();
            serde_json::to_writer(&mut event, &value).map_err(|e| ExportError::Write(e.into()))?;
            event.push(b'\n');
            out.write_all(&event).map_err(ExportError::Write)?;
            summary.exported += 1;
            summary.first_seq.get_or_insert(record.seq);
            summary.last_seq = Some(record.seq);
        }
    }
    out.flush().map_err(ExportError::Write)?;
    Ok(summary)
}

/// Whether a parsed record is one this export can map: version 1 and a `ts` that parses.
fn readable(record: &Record) -> bool {
    record.v == record::VERSION && epoch_ms(record).is_some()
}

enum Line {
    /// No more bytes.
    End,
    /// A line and its `\n` (not kept in the buffer).
    Complete,
    /// The last bytes of the file, without a `\n`.
    Incomplete,
    /// Longer than [`MAX_LINE`]; consumed up to its `\n`.
    TooLong,
}

/// Read one line into `buf` (without its `\n`), never holding more than [`MAX_LINE`] bytes.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong,
                (true, false) => Line::Incomplete,
            });
        }
        any = true;
        let (chunk, newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i)),
            None => (available, None),
        };
        if !too_long && buf.len() + chunk.len() <= MAX_LINE {
            buf.extend_from_slice(chunk);
        } else {
            too_long = true;
            buf.clear();
        }
        let used = newline.map_or(chunk.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// One record as an OCSF API Activity event, without the segment back-reference (which
/// [`export_ocsf`] adds as `unmapped.segment` and `metadata.log_name`). `None` for the types in
/// [`NOT_EXPORTED`], for a record version other than 1 and for a `ts` that does not parse.
/// See the module documentation for the mapping.
pub fn to_ocsf(record: &Record) -> Option<Value> {
    if NOT_EXPORTED.contains(&record.kind.as_str()) || !readable(record) {
        return None;
    }
    let body: Map<String, Value> = record
        .fields
        .iter()
        .filter(|(k, _)| !HEAD_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut event = Event::new(record, body);
    match record.kind.as_str() {
        "request.decision" => event.decision(),
        "request.completion" => event.completion(),
        "auth.failed" => event.auth_failed(),
        _ => event.other(),
    }
    Some(event.finish())
}

/// An event under construction: the record's fields not yet mapped, and the OCSF attributes.
struct Event<'a> {
    record: &'a Record,
    /// The record's own fields; mapped ones are taken out, the rest go to `unmapped.fields`.
    rest: Map<String, Value>,
    /// Top-level attributes other than the ones below.
    out: Map<String, Value>,
    api: Map<String, Value>,
    actor: Map<String, Value>,
    metadata: Map<String, Value>,
    activity: Caption,
    status: (u64, String),
    severity: u64,
    /// `(action_id, action)`, `(disposition_id, disposition)`.
    disposition: Option<(Caption, Caption)>,
}

impl<'a> Event<'a> {
    fn new(record: &'a Record, rest: Map<String, Value>) -> Self {
        Event {
            record,
            rest,
            out: Map::new(),
            api: Map::new(),
            actor: Map::new(),
            metadata: Map::new(),
            activity: OTHER,
            status: (0, "Unknown".into()),
            severity: 1,
            disposition: None,
        }
    }

    /// The fields every request record may carry.
    fn request(&mut self) {
        let method = self.take_text("method");
        self.activity = method.as_deref().map_or(UNKNOWN, activity_of);
        let operation = self.take_text("operation");
        let operation = operation
            .or_else(|| method.clone())
            .unwrap_or_else(|| self.record.kind.clone());
        self.api.insert("operation".into(), operation.into());
        let request_id = self.take_text("request_id");
        self.request_id(request_id);
        let route = self.take_text("route");
        put(
            &mut self.api,
            "service",
            object([("name", route.map(Value::from))]),
        );
        let target = match self.take_text("target") {
            Some(target) => parse_target(&target),
            None => Target::default(),
        };
        put(
            &mut self.out,
            "http_request",
            object([
                ("http_method", method.map(|m| m.to_ascii_uppercase().into())),
                (
                    "url",
                    object([
                        ("scheme", target.scheme.map(Value::from)),
                        ("hostname", target.host.clone().map(Value::from)),
                        ("port", target.port.map(Value::from)),
                        ("path", target.path.map(Value::from)),
                        ("query_string", target.query.map(Value::from)),
                    ]),
                ),
            ]),
        );
        let (ip, hostname) = match target.host {
            Some(host) => match host.parse::<IpAddr>() {
                Ok(ip) => (Some(ip.to_string()), None),
                Err(_) => (None, Some(host)),
            },
            None => (None, None),
        };
        put(
            &mut self.out,
            "dst_endpoint",
            object([
                ("hostname", hostname.map(Value::from)),
                ("ip", ip.map(Value::from)),
                ("port", target.port.map(Value::from)),
            ]),
        );
        self.source();
        self.principal();
    }

    /// `request_id` to `api.request.uid` and `metadata.correlation_uid`.
    fn request_id(&mut self, request_id: Option<String>) {
        if let Some(id) = request_id {
            self.api.insert("request".into(), json!({ "uid": id }));
            self.metadata.insert("correlation_uid".into(), id.into());
        }
    }

    /// `source.addr` to `src_endpoint`; the rest of `source` stays.
    fn source(&mut self) {
        let Some(Value::Object(source)) = self.rest.get_mut("source") else {
            return;
        };
        let endpoint = source
            .get("addr")
            .and_then(Value::as_str)
            .and_then(endpoint_of);
        if endpoint.is_some() {
            source.remove("addr");
        }
        if source.is_empty() {
            self.rest.remove("source");
        }
        put(&mut self.out, "src_endpoint", endpoint);
    }

    /// `principal` to `actor`; `roles` (and anything else) stays.
    fn principal(&mut self) {
        let Some(Value::Object(principal)) = self.rest.get_mut("principal") else {
            return;
        };
        let mut take = |key: &str| match principal.get(key) {
            Some(Value::String(_)) => principal.remove(key),
            _ => None,
        };
        let sub = take("sub");
        let iss = take("iss");
        let tenant = take("tenant");
        let app_id = take("app_id");
        if principal.is_empty() {
            self.rest.remove("principal");
        }
        put(&mut self.actor, "user", object([("uid", sub)]));
        put(
            &mut self.actor,
            "idp",
            object([("issuer", iss), ("tenant_uid", tenant)]),
        );
        put(&mut self.actor, "app_uid", app_id);
    }

    fn decision(&mut self) {
        self.request();
        let decision = self.take_text("decision");
        let rule = self.take_text("rule");
        if decision.is_some() || rule.is_some() {
            let authorization = object([
                ("decision", decision.clone().map(Value::from)),
                ("policy", object([("name", rule.map(Value::from))])),
            ]);
            put(
                &mut self.actor,
                "authorizations",
                authorization.map(|a| Value::Array(vec![a])),
            );
        }
        self.status_code("code");
        self.status_detail("reason");
        match decision.as_deref() {
            Some("allow") => {
                self.set_status(SUCCESS);
                self.disposition = Some(((1, "Allowed"), (1, "Allowed")));
            }
            Some("deny") => {
                self.set_status(FAILURE);
                self.disposition = Some(((2, "Denied"), (2, "Blocked")));
                self.severity = 2;
            }
            Some("approval-required") => {
                self.set_status((99, "approval-required"));
                self.disposition = Some(((0, "Unknown"), (14, "Delayed")));
            }
            Some(other) => self.status = (99, other.into()),
            None => {}
        }
    }

    fn completion(&mut self) {
        self.request();
        let status = self.rest.get("status").and_then(Value::as_u64);
        if status.is_some() {
            self.rest.remove("status");
        }
        let bytes = self
            .rest
            .get("bodies")
            .and_then(|b| b.get("response_bytes"))
            .and_then(Value::as_u64);
        if bytes.is_some()
            && let Some(Value::Object(bodies)) = self.rest.get_mut("bodies")
        {
            bodies.remove("response_bytes");
            if bodies.is_empty() {
                self.rest.remove("bodies");
            }
        }
        put(
            &mut self.out,
            "http_response",
            object([
                ("code", status.map(Value::from)),
                ("body_length", bytes.map(Value::from)),
            ]),
        );
        if let Some(us) = self.rest.get("latency_us").and_then(Value::as_u64) {
            self.out.insert("duration".into(), (us / 1000).into());
        }
        let outcome = self.take_text("outcome");
        let error = self.take_text("error");
        if let Some(error) = &error {
            self.out.insert("status_code".into(), error.as_str().into());
            self.api
                .insert("response".into(), json!({ "error": error }));
        }
        let failed = outcome.as_deref() == Some("error")
            || error.is_some()
            || status.is_some_and(|s| s >= 400);
        if failed {
            self.set_status(FAILURE);
        } else if outcome.is_some() || status.is_some() {
            self.set_status(SUCCESS);
        }
        if let Some(outcome) = outcome.filter(|o| o != "ok" && o != "error") {
            self.rest.insert("outcome".into(), outcome.into());
        }
    }

    fn auth_failed(&mut self) {
        self.request();
        self.status_code("code");
        self.status_detail("reason");
        self.set_status(FAILURE);
        self.disposition = Some(((2, "Denied"), (2, "Blocked")));
        self.severity = 3;
    }

    fn other(&mut self) {
        let kind = self.record.kind.clone();
        self.api.insert("operation".into(), kind.as_str().into());
        let request_id = self.take_text("request_id");
        self.request_id(request_id);
        self.actor.insert("app_name".into(), PRODUCT.into());
        match kind.as_str() {
            "gateway.start" | "gateway.stop" | "config.loaded" | "heartbeat" | "key.rotated" => {
                self.set_status(SUCCESS);
            }
            "log.recovered" => {
                self.set_status(SUCCESS);
                self.severity = 3;
            }
            "config.rejected" => {
                self.status_detail("error");
                self.set_status(FAILURE);
                self.severity = 2;
            }
            _ => {}
        }
    }

    fn set_status(&mut self, (id, name): (u64, &str)) {
        self.status = (id, name.into());
    }

    fn status_code(&mut self, key: &str) {
        if let Some(code) = self.take_text(key) {
            self.out.insert("status_code".into(), code.into());
        }
    }

    fn status_detail(&mut self, key: &str) {
        if let Some(detail) = self.take_text(key) {
            self.out.insert("status_detail".into(), detail.into());
        }
    }

    /// Take a string field out of the record's fields (left in place if it is not a string).
    fn take_text(&mut self, key: &str) -> Option<String> {
        match self.rest.get(key) {
            Some(Value::String(_)) => match self.rest.remove(key) {
                Some(Value::String(s)) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    fn finish(self) -> Value {
        let Event {
            record,
            rest,
            mut out,
            api,
            actor,
            mut metadata,
            activity: (activity_id, activity_name),
            status: (status_id, status),
            severity,
            disposition,
        } = self;
        if let Some(((action_id, action), (disposition_id, disposition))) = disposition {
            out.insert("action_id".into(), action_id.into());
            out.insert("action".into(), action.into());
            out.insert("disposition_id".into(), disposition_id.into());
            out.insert("disposition".into(), disposition.into());
            metadata.insert("profiles".into(), json!(["security_control"]));
        }
        metadata.insert("version".into(), OCSF_VERSION.into());
        metadata.insert(
            "product".into(),
            json!({ "name": PRODUCT, "vendor_name": PRODUCT }),
        );
        metadata.insert("uid".into(), record.id.as_str().into());
        metadata.insert("event_code".into(), record.kind.as_str().into());
        metadata.insert("original_time".into(), record.ts.as_str().into());
        metadata.insert("log_provider".into(), PRODUCT.into());
        metadata.insert("log_version".into(), record.v.to_string().into());
        put(
            &mut metadata,
            "sequence",
            i32::try_from(record.seq).ok().map(Value::from),
        );
        let mut unmapped = json!({
            "seq": record.seq,
            "log": record.log,
            "epoch": record.epoch,
            "type": record.kind,
            "leaf": record::encode_hash(&record.leaf),
        });
        if !rest.is_empty() {
            let mut rest = Value::Object(rest);
            scrub(&mut rest);
            unmapped["fields"] = rest;
        }
        let severity_name = match severity {
            2 => "Low",
            3 => "Medium",
            _ => "Informational",
        };
        let mut event = json!({
            "class_uid": CLASS_UID,
            "class_name": "API Activity",
            "category_uid": CATEGORY_UID,
            "category_name": "Application Activity",
            "activity_id": activity_id,
            "activity_name": activity_name,
            "type_uid": CLASS_UID * 100 + activity_id,
            "type_name": format!("API Activity: {activity_name}"),
            "time": epoch_ms(record),
            "severity_id": severity,
            "severity": severity_name,
            "status_id": status_id,
            "status": status,
        });
        if let Value::Object(map) = &mut event {
            map.extend(out);
            if !api.is_empty() {
                map.insert("api".into(), Value::Object(api));
            }
            if !actor.is_empty() {
                map.insert("actor".into(), Value::Object(actor));
            }
            map.insert("metadata".into(), Value::Object(metadata));
            map.insert("unmapped".into(), unmapped);
        }
        event
    }
}

/// An OCSF enum value: its id and its caption.
type Caption = (u64, &'static str);

const UNKNOWN: Caption = (0, "Unknown");
const OTHER: Caption = (99, "Other");
const SUCCESS: Caption = (1, "Success");
const FAILURE: Caption = (2, "Failure");

/// The API Activity activity of an HTTP method.
fn activity_of(method: &str) -> Caption {
    match method.to_ascii_uppercase().as_str() {
        "POST" => (1, "Create"),
        "GET" | "HEAD" | "OPTIONS" => (2, "Read"),
        "PUT" | "PATCH" => (3, "Update"),
        "DELETE" => (4, "Delete"),
        _ => OTHER,
    }
}

/// `time`: `ts` in milliseconds since the epoch.
fn epoch_ms(record: &Record) -> Option<u64> {
    let since = record.time()?.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// `src_endpoint` from `ip:port`, `[ip]:port` or a bare address; `None` for anything else.
fn endpoint_of(addr: &str) -> Option<Value> {
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        return Some(json!({ "ip": socket.ip().to_string(), "port": socket.port() }));
    }
    let ip = addr.parse::<IpAddr>().ok()?;
    Some(json!({ "ip": ip.to_string() }))
}

/// A request target (`host[:port]/path[?query]`, possibly with a scheme) taken apart.
#[derive(Debug, Default)]
struct Target {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    path: Option<String>,
    query: Option<String>,
}

fn parse_target(target: &str) -> Target {
    let mut parsed = Target::default();
    let mut rest = target;
    if let Some((scheme, after)) = rest.split_once("://") {
        parsed.scheme = Some(scheme.to_ascii_lowercase());
        rest = after;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => match rest.find('?') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        },
    };
    let (host, port) = split_port(authority);
    parsed.host = (!host.is_empty()).then(|| host.to_string());
    parsed.port = port;
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    parsed.path = (!path.is_empty()).then(|| path.to_string());
    parsed.query = query.filter(|q| !q.is_empty()).map(str::to_string);
    parsed
}

/// `host:port` or `[v6]:port` into host (brackets removed) and port.
fn split_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(inner) = authority.strip_prefix('[')
        && let Some((host, after)) = inner.split_once(']')
    {
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// Drop fields named like credentials, at any depth.
fn scrub(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !is_credential(key));
            map.values_mut().for_each(scrub);
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

fn is_credential(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    CREDENTIAL_KEYS.contains(&key.as_str())
}

/// Insert `value` under `key` if there is one.
fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.into(), value);
    }
}

/// An object of the present values; `None` if none is.
fn object<const N: usize>(pairs: [(&str, Option<Value>); N]) -> Option<Value> {
    let map: Map<String, Value> = pairs
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_apart() {
        let t = parse_target("api.github.com/repos/o/r/issues?state=open");
        assert_eq!(t.host.as_deref(), Some("api.github.com"));
        assert_eq!(t.path.as_deref(), Some("/repos/o/r/issues"));
        assert_eq!(t.query.as_deref(), Some("state=open"));
        let t = parse_target("https://[2001:db8::1]:8443/x");
        assert_eq!(t.scheme.as_deref(), Some("https"));
        assert_eq!(t.host.as_deref(), Some("2001:db8::1"));
        assert_eq!(t.port, Some(8443));
        let t = parse_target("store.blob.core.windows.net:443");
        assert_eq!(t.host.as_deref(), Some("store.blob.core.windows.net"));
        assert_eq!(t.port, Some(443));
        assert_eq!(t.path, None);
    }

    #[test]
    fn methods_map_to_crud() {
        assert_eq!(activity_of("post").0, 1);
        assert_eq!(activity_of("GET").0, 2);
        assert_eq!(activity_of("PATCH").0, 3);
        assert_eq!(activity_of("DELETE").0, 4);
        assert_eq!(activity_of("CONNECT").0, 99);
    }

    #[test]
    fn addresses_become_endpoints() {
        assert_eq!(
            endpoint_of("[::1]:4431"),
            Some(json!({"ip": "::1", "port": 4431}))
        );
        assert_eq!(endpoint_of("10.0.0.7"), Some(json!({"ip": "10.0.0.7"})));
        assert_eq!(endpoint_of("unix:/run/sock"), None);
    }

    #[test]
    fn credentials_are_dropped_at_any_depth() {
        let mut v =
            json!({"a": {"Authorization": "x", "b": [{"x-api-key": "k", "c": 1}]}, "token": "t"});
        scrub(&mut v);
        assert_eq!(v, json!({"a": {"b": [{"c": 1}]}}));
    }

    #[test]
    fn long_lines_are_skipped_whole() {
        let mut data = vec![b'x'; MAX_LINE + 10];
        data.extend_from_slice(b"\nok\ntail");
        let mut reader = io::BufReader::with_capacity(4096, &data[..]);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut reader, &mut buf),
            Ok(Line::TooLong)
        ));
        assert!(matches!(
            read_line(&mut reader, &mut buf),
            Ok(Line::Complete)
        ));
        assert_eq!(buf, b"ok");
        assert!(matches!(
            read_line(&mut reader, &mut buf),
            Ok(Line::Incomplete)
        ));
        assert_eq!(buf, b"tail");
        assert!(matches!(read_line(&mut reader, &mut buf), Ok(Line::End)));
    }
}
