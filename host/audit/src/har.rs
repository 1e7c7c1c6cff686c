//! Session recordings: HTTP traffic as chained HAR 1.2 entries (`<session>.harl`, one JSON
//! line per request/response pair), content-addressed body blobs, crash recovery, chain
//! verification, listing, and export as a standard HAR 1.2 document.
//!
//! # On-disk format (version 1)
//!
//! A sessions directory holds:
//! - `<session id>.harl`: one line per request/response pair, ending in a single `\n`:
//!   `{"v":1,"session":"<id>","seq":n,"prev":"<base64>","ts":"<RFC 3339 µs>","entry":{…}}`,
//!   the keys in exactly this order. `entry` is a HAR 1.2 entry plus custom fields starting
//!   with `_` (`_requestId`, `_auditSeq`, `_decision`, `_findings`, `_traceId`, `_principal`).
//! - `blobs/<sha256 hex>`: bodies larger than the blob threshold, written once (temporary file,
//!   `fdatasync`, rename, directory `fsync`); the entry then holds `"_blob":"<sha256 hex>"` in
//!   `postData` or `content` instead of `text`. A body over the hard cap is not stored at all:
//!   the entry holds its size, `"_sha256"` and `"_truncated":true`.
//! - `quarantine/<id>.harl.<unix ts>.cut`: bytes that recovery cut off a session file.
//! - `recorder.lock`: held with an exclusive file lock by the one [`Recorder`] of the directory.
//!
//! Chaining is the audit log's: hashes are over the stored bytes,
//! `leaf = SHA-256(0x00 || line without its "\n")`; `prev` is the standard padded base64 of
//! the previous line's leaf, and for `seq` 0 the genesis hash
//! `SHA-256("portcullis-har-v1 genesis\n" || session id)`. The leaf of an entry's line is what
//! the gateway writes into the audit completion record, so the audit log's signed checkpoints
//! cover recordings too; that binding (not the chain alone) is what catches an edit of a
//! session's last line or the loss of its tail at a line boundary.
//!
//! Credentials are never stored: whatever the caller passes, the recorder replaces the values
//! of credential headers and query parameters with `[REDACTED]` (see [`is_secret_header`],
//! [`is_secret_query_param`], [`redact_url`]). Bodies are stored as given: the caller passes
//! them masked, exactly as the client saw them.
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::merkle::{Hash, leaf_hash};
use crate::record::{decode_hash, encode_hash, format_ts};

/// The format version written in every line's `v`.
pub const VERSION: u64 = 1;

/// The extension of a session's file: `<session id>.harl`.
pub const EXTENSION: &str = "harl";

/// The subdirectory holding content-addressed body blobs.
pub const BLOBS: &str = "blobs";

/// The subdirectory where recovery moves the bytes it cuts off a session file.
pub const QUARANTINE: &str = "quarantine";

/// The lock file the one recorder of a directory holds.
pub const LOCK: &str = "recorder.lock";

/// What a credential's value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// The keys of every line, in this order.
pub const LINE_KEYS: [&str; 6] = ["v", "session", "seq", "prev", "ts", "entry"];

/// The longest session id.
pub const MAX_SESSION_ID: usize = 128;

/// Headers whose values are always redacted (compared case-insensitively).
const SECRET_HEADERS: [&str; 9] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-ms-copy-source-authorization",
    "x-api-key",
    "x-functions-key",
    "ocp-apim-subscription-key",
    "api-key",
];

/// A header whose name contains one of these (lowercase) is redacted.
const SECRET_HEADER_PARTS: [&str; 5] = ["token", "secret", "signature", "password", "api-key"];

/// Query parameters whose values are always redacted (compared case-insensitively, after
/// percent-decoding the name).
const SECRET_PARAMS: [&str; 12] = [
    "sig",
    "signature",
    "token",
    "code",
    "access_token",
    "client_secret",
    "x-ms-signature",
    "key",
    "apikey",
    "api_key",
    "api-key",
    "subscription-key",
];

/// A query parameter whose name contains one of these (lowercase) is redacted.
const SECRET_PARAM_PARTS: [&str; 4] = ["token", "secret", "signature", "password"];

/// Headers whose values are URLs: their query parameters and user info are redacted.
const URL_HEADERS: [&str; 4] = ["location", "content-location", "referer", ":path"];

/// The `prev` of a session's line 0: `SHA-256("portcullis-har-v1 genesis\n" || session id)`.
pub fn genesis(session: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(b"portcullis-har-v1 genesis\n");
    h.update(session.as_bytes());
    h.finalize().into()
}

/// Refuse a session id that is not 1 to [`MAX_SESSION_ID`] characters of `[A-Za-z0-9._-]`, or
/// that starts with `.`: a session id becomes a file name and must never traverse a path.
pub fn validate_session_id(id: &str) -> Result<(), HarError> {
    let valid = (1..=MAX_SESSION_ID).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(HarError::InvalidSession(
            id.chars().take(MAX_SESSION_ID + 8).collect(),
        ))
    }
}

/// The file of session `id` in `dir`, once the id is validated.
pub fn session_path(dir: &Path, id: &str) -> Result<PathBuf, HarError> {
    validate_session_id(id)?;
    Ok(dir.join(format!("{id}.{EXTENSION}")))
}

/// Whether a header's value is a credential that is never stored: `authorization`,
/// `proxy-authorization`, `cookie`, `set-cookie`, `x-ms-copy-source-authorization`,
/// `x-api-key`, `api-key`, `x-functions-key`, `ocp-apim-subscription-key`, and any header whose
/// name contains `token`, `secret`, `signature`, `password` or `api-key` (case-insensitive).
pub fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&name.as_str())
        || SECRET_HEADER_PARTS.iter().any(|part| name.contains(part))
}

/// Whether a URL query parameter's value is a credential that is never stored: `sig`,
/// `signature`, `token`, `code`, `access_token`, `client_secret`, `x-ms-signature`, `key`,
/// `apikey`, `api_key`, `api-key`, `subscription-key`, and any parameter whose name contains
/// `token`, `secret`, `signature` or `password` (case-insensitive; `name` is already
/// percent-decoded).
pub fn is_secret_query_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str())
        || SECRET_PARAM_PARTS.iter().any(|part| name.contains(part))
}

/// A URL with its credentials redacted: the values of secret query parameters
/// ([`is_secret_query_param`]) become `[REDACTED]`, user info (`user:password@`) becomes
/// `[REDACTED]@`, and the fragment (never sent over HTTP, and where OAuth's implicit flow puts
/// tokens) is dropped. Everything else is kept byte for byte.
pub fn redact_url(url: &str) -> String {
    // Without a query, userinfo or fragment there is nothing to take out: the usual request
    // target, copied as it is.
    if !url.bytes().any(|b| matches!(b, b'?' | b'@' | b'#')) {
        return url.to_string();
    }
    redact_url_and_query(url).0
}

/// [`redact_url`], plus the HAR `queryString` of the redacted URL: every non-empty parameter,
/// name and value form-decoded (`%XX` and `+`).
fn redact_url_and_query(url: &str) -> (String, Vec<(String, String)>) {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = redact_userinfo(base);
    let mut params = Vec::new();
    if let Some(query) = query {
        out.push('?');
        for (i, part) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            if part.is_empty() {
                continue;
            }
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let decoded = form_decode(name);
            if is_secret_query_param(&decoded) && part.contains('=') {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
                params.push((decoded, REDACTED.to_string()));
            } else {
                out.push_str(part);
                params.push((decoded, form_decode(value)));
            }
        }
    }
    (out, params)
}

/// `scheme://userinfo@host…` → `scheme://[REDACTED]@host…`.
fn redact_userinfo(base: &str) -> String {
    let scheme_end = base.find("://").filter(|&end| !base[..end].contains('/'));
    let Some(scheme_end) = scheme_end else {
        return base.to_string();
    };
    let authority_start = scheme_end + 3;
    let rest = &base[authority_start..];
    let authority_len = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &base[..authority_start], &rest[at..]),
        None => base.to_string(),
    }
}

/// Decode `%XX` escapes and `+` (as a space), as a browser's `URLSearchParams` does; invalid
/// escapes are kept and invalid UTF-8 is replaced.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                out.push(hex_value(bytes[i + 1]) << 4 | hex_value(bytes[i + 2]));
                i += 3;
                continue;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of an ASCII hex digit.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// A header list with credentials redacted, as HAR `[{name, value}]`.
fn headers_json(headers: &[(String, String)]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(name, value)| {
                let lower = name.to_ascii_lowercase();
                let value = if is_secret_header(&lower) {
                    REDACTED.to_string()
                } else if URL_HEADERS.contains(&lower.as_str()) {
                    redact_url(value)
                } else {
                    value.clone()
                };
                json!({"name": name, "value": value})
            })
            .collect(),
    )
}

/// The first value of header `name` (case-insensitive).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Phases of a request's time, as HAR `timings`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Sending the request upstream.
    pub send: Duration,
    /// Waiting for the response's first byte.
    pub wait: Duration,
    /// Reading the response.
    pub receive: Duration,
}

/// One request/response pair, as the gateway saw it. Bodies are given already masked, exactly
/// as the client saw them; credentials in headers and the URL are redacted by the recorder
/// whether or not the caller did.
#[derive(Clone)]
pub struct Entry {
    /// The session the pair belongs to (see [`validate_session_id`]).
    pub session: String,
    /// When the request arrived (HAR `startedDateTime`).
    pub started: SystemTime,
    /// The whole exchange (HAR `time`).
    pub duration: Duration,
    /// The phases of `duration`; `None` records it all as `wait`.
    pub timings: Option<Timings>,
    /// The request method.
    pub method: String,
    /// The absolute request URL.
    pub url: String,
    /// `HTTP/1.1`, `HTTP/2`, …
    pub http_version: String,
    /// The request headers, in order.
    pub request_headers: Vec<(String, String)>,
    /// The request body (masked), if there was one.
    pub request_body: Option<Vec<u8>>,
    /// The request body's MIME type; empty means the `Content-Type` request header's.
    pub request_mime: String,
    /// The response status code.
    pub status: u16,
    /// The response reason phrase.
    pub status_text: String,
    /// The response headers, in order.
    pub response_headers: Vec<(String, String)>,
    /// The response body (masked), if there was one.
    pub response_body: Option<Vec<u8>>,
    /// The response body's MIME type; empty means the `Content-Type` response header's.
    pub response_mime: String,
    /// `_requestId`: the gateway's request id.
    pub request_id: String,
    /// `_auditSeq`: the `seq` of the request's decision record in the audit log.
    pub audit_seq: Option<u64>,
    /// `_decision`: what the gateway decided (`allow`, `deny`, …).
    pub decision: String,
    /// `_findings`: masking and policy findings, any JSON.
    pub findings: Value,
    /// `_traceId`: the W3C trace id, if any.
    pub trace_id: Option<String>,
    /// `_principal`: who made the request, if known.
    pub principal: Option<String>,
}

impl Default for Entry {
    /// An empty `GET` over `HTTP/1.1` started at the Unix epoch; fill in what is known.
    fn default() -> Self {
        Entry {
            session: String::new(),
            started: UNIX_EPOCH,
            duration: Duration::ZERO,
            timings: None,
            method: "GET".into(),
            url: String::new(),
            http_version: "HTTP/1.1".into(),
            request_headers: Vec::new(),
            request_body: None,
            request_mime: String::new(),
            status: 0,
            status_text: String::new(),
            response_headers: Vec::new(),
            response_body: None,
            response_mime: String::new(),
            request_id: String::new(),
            audit_seq: None,
            decision: String::new(),
            findings: Value::Null,
            trace_id: None,
            principal: None,
        }
    }
}

impl fmt::Debug for Entry {
    /// Redacted like the recording: credential values never reach a log line, bodies appear as
    /// their lengths.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("session", &self.session)
            .field("started", &self.started)
            .field("duration", &self.duration)
            .field("method", &self.method)
            .field("url", &redact_url(&self.url))
            .field("http_version", &self.http_version)
            .field("request_headers", &headers_json(&self.request_headers))
            .field(
                "request_body_len",
                &self.request_body.as_ref().map(Vec::len),
            )
            .field("status", &self.status)
            .field("response_headers", &headers_json(&self.response_headers))
            .field(
                "response_body_len",
                &self.response_body.as_ref().map(Vec::len),
            )
            .field("request_id", &self.request_id)
            .field("audit_seq", &self.audit_seq)
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

/// How a [`Recorder`] stores bodies and queues work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderOptions {
    /// Bodies larger than this many bytes go to `blobs/` (default 64 KiB).
    pub blob_threshold: usize,
    /// Bodies larger than this many bytes are not stored, only their size and SHA-256
    /// (default 16 MiB).
    pub max_body: usize,
    /// Capacity of the channel to the writer thread; a full channel makes `record` wait
    /// (default 1024).
    pub queue: usize,
    /// Most entries written in one group commit (default 512).
    pub max_batch: usize,
    /// Most session files kept open; the least recently used are closed (default 64).
    pub max_open_files: usize,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            blob_threshold: 64 * 1024,
            max_body: 16 * 1024 * 1024,
            queue: 1024,
            max_batch: 512,
            max_open_files: 64,
        }
    }
}

/// Why a recording could not be written, read or trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarError {
    /// A session id that could be a path, or is too long (see [`validate_session_id`]).
    #[error(
        "invalid session id {0:?}: 1 to 128 characters of A-Z a-z 0-9 . _ -, not starting with '.'"
    )]
    InvalidSession(String),
    /// [`RecorderOptions`] that cannot work.
    #[error("invalid recorder options: {0}")]
    Options(String),
    /// No file for this session.
    #[error("no recording of session {0}")]
    NotFound(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// Another recorder holds the directory's lock.
    #[error("{}: another recorder holds the lock", .0.display())]
    Locked(PathBuf),
    /// The session's chain is broken: the line at `seq` is torn, unparsable or does not chain
    /// to its predecessor. An edit of line `n` that still parses shows at `n + 1`.
    #[error("session {session}: the chain is broken at seq {seq}: {reason}")]
    Broken {
        /// The session.
        session: String,
        /// The first line that does not verify.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// A body blob an entry refers to is missing or does not match its hash.
    #[error("session {session}: seq {seq}: blob {blob}: {reason}")]
    Blob {
        /// The session.
        session: String,
        /// The entry.
        seq: u64,
        /// The blob's name (its SHA-256, hex).
        blob: String,
        /// Why.
        reason: String,
    },
    /// The recorder was closed (or its writer thread is gone).
    #[error("the session recorder is closed")]
    Closed,
    /// The writer thread panicked.
    #[error("the session recorder's writer thread panicked")]
    Panicked,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> HarError + '_ {
    move |source| HarError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where an entry was written: the gateway puts `hash` into the audit completion record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The session.
    pub session: String,
    /// The entry's position in the session, from 0.
    pub seq: u64,
    /// The leaf hash of the entry's stored line: `SHA-256(0x00 || line without "\n")`.
    pub hash: Hash,
}

/// One session file, for `portcullis sessions list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// The session id.
    pub id: String,
    /// Lines that verify, from the start up to the first broken one.
    pub entries: u64,
    /// `ts` of the first line, as written.
    pub first_ts: Option<String>,
    /// `ts` of the last line that verifies, as written.
    pub last_ts: Option<String>,
    /// The file's size.
    pub bytes: u64,
    /// `None` if the whole file chains; else the `seq` of the first line that does not.
    pub broken: Option<u64>,
    /// Why that line does not verify.
    pub problem: Option<String>,
}

enum Msg {
    Record(Box<Entry>, flume::Sender<Result<Recorded, HarError>>),
    Close(flume::Sender<()>),
}

/// The session recorder: one writer thread fed by a bounded channel, so request tasks never
/// block on file I/O. Every entry is written and `fdatasync`'ed (one per touched file per
/// batch: group commit) before its caller hears back. Dropping it closes it.
pub struct Recorder {
    dir: PathBuf,
    tx: flume::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Open (creating it if needed) the sessions directory `dir`, take its lock, recover every
    /// session file whose last line is torn (the rest are checked when first written to again),
    /// and start the writer thread.
    pub fn open(dir: impl AsRef<Path>, options: RecorderOptions) -> Result<Recorder, HarError> {
        let dir = dir.as_ref().to_path_buf();
        if options.queue == 0 || options.max_batch == 0 || options.max_open_files == 0 {
            return Err(HarError::Options(
                "queue, max_batch and max_open_files must be at least 1".into(),
            ));
        }
        for sub in [dir.clone(), dir.join(BLOBS), dir.join(QUARANTINE)] {
            fs::create_dir_all(&sub).map_err(io_error(&sub))?;
        }
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(HarError::Locked(dir)),
            Err(fs::TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
        }
        remove_stale_temporaries(&dir.join(BLOBS));
        recover_torn(&dir)?;
        let (tx, rx) = flume::bounded(options.queue);
        let writer = Writer {
            dir: dir.clone(),
            options,
            sessions: HashMap::new(),
            clock: 0,
            _lock: lock,
        };
        let thread = std::thread::Builder::new()
            .name("portcullis-har".into())
            .spawn(move || writer.run(&rx))
            .map_err(io_error(&dir))?;
        Ok(Recorder {
            dir,
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The sessions directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Record one request/response pair; resolves once its line is durable. If the future is
    /// dropped after the entry was queued, the entry is still written.
    pub async fn record(&self, entry: Entry) -> Result<Recorded, HarError> {
        validate_session_id(&entry.session)?;
        let (reply, answer) = flume::bounded(1);
        self.tx
            .send_async(Msg::Record(Box::new(entry), reply))
            .await
            .map_err(|_| HarError::Closed)?;
        answer.recv_async().await.map_err(|_| HarError::Closed)?
    }

    /// [`record`](Self::record) for synchronous callers and tests: blocks the calling thread
    /// (never call it on an async runtime's thread).
    pub fn record_blocking(&self, entry: Entry) -> Result<Recorded, HarError> {
        validate_session_id(&entry.session)?;
        let (reply, answer) = flume::bounded(1);
        self.tx
            .send(Msg::Record(Box::new(entry), reply))
            .map_err(|_| HarError::Closed)?;
        answer.recv().map_err(|_| HarError::Closed)?
    }

    /// Write everything queued before this call, close the files and join the writer thread.
    /// Later calls to `record` fail with [`HarError::Closed`]; closing twice is harmless.
    pub fn close(&self) -> Result<(), HarError> {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(thread) = thread else {
            return Ok(());
        };
        let (reply, answer) = flume::bounded(1);
        if self.tx.send(Msg::Close(reply)).is_ok() {
            // An error only means the thread is gone already; the join tells why.
            let _ = answer.recv();
        }
        thread.join().map_err(|_| HarError::Panicked)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the session recorder failed");
        }
    }
}

/// Remove temporary blob files a crash left behind.
fn remove_stale_temporaries(blobs: &Path) {
    let Ok(read) = fs::read_dir(blobs) else {
        return;
    };
    for item in read.flatten() {
        if item.file_name().to_string_lossy().starts_with(".tmp-") {
            let _ = fs::remove_file(item.path());
        }
    }
}

/// Recover every session file whose last byte is not `\n` (a torn or zero-filled tail).
fn recover_torn(dir: &Path) -> Result<(), HarError> {
    for id in session_ids(dir)? {
        let path = dir.join(format!("{id}.{EXTENSION}"));
        let mut file = File::open(&path).map_err(io_error(&path))?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        if len == 0 {
            continue;
        }
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))
            .and_then(|_| file.read_exact(&mut last))
            .map_err(io_error(&path))?;
        if last[0] != b'\n' {
            drop(file);
            open_session(dir, &id)?;
        }
    }
    Ok(())
}

/// The ids of the session files in `dir` (files `<valid id>.harl`), unsorted.
fn session_ids(dir: &Path) -> Result<Vec<String>, HarError> {
    let mut ids = Vec::new();
    for item in fs::read_dir(dir).map_err(io_error(dir))? {
        let item = item.map_err(io_error(dir))?;
        let name = item.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(&format!(".{EXTENSION}")))
        else {
            continue;
        };
        let is_file = item.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && validate_session_id(id).is_ok() {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// An open session file and where its chain stands.
struct Session {
    file: File,
    path: PathBuf,
    /// The next line's `seq`.
    seq: u64,
    /// The last line's leaf (or the genesis hash).
    prev: Hash,
    /// The file's length after the last durable batch.
    len: u64,
    /// When it was last used, on the writer's clock.
    used: u64,
}

/// Open session `id`'s file for appending, creating it, or recovering it: check the chain, move
/// everything from the first torn, unparsable or mis-chained line on to `quarantine/`, truncate
/// there, and continue the chain from the last good line.
fn open_session(dir: &Path, id: &str) -> Result<Session, HarError> {
    let path = session_path(dir, id)?;
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io_error(&path))?;
    if !existed {
        sync_dir(dir)?;
        return Ok(Session {
            file,
            path,
            seq: 0,
            prev: genesis(id),
            len: 0,
            used: 0,
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error(&path))?;
    let scanned = scan(id, &bytes, false);
    if let Some(broken) = &scanned.broken {
        let cut = &bytes[scanned.good_len..];
        let moved_to = quarantine(dir, id, cut)?;
        file.set_len(scanned.good_len as u64)
            .and_then(|()| file.sync_all())
            .map_err(io_error(&path))?;
        tracing::warn!(
            session = id,
            seq = broken.seq,
            reason = %broken.reason,
            cut_bytes = cut.len(),
            quarantine = %moved_to.display(),
            "session recording recovered: cut at the first bad line"
        );
    }
    Ok(Session {
        file,
        path,
        seq: scanned.good.len() as u64,
        prev: scanned.good.last().map_or_else(|| genesis(id), |g| g.leaf),
        len: scanned.good_len as u64,
        used: 0,
    })
}

/// Keep `cut` as `quarantine/<id>.harl.<unix ts>.cut` (`.<ts>.<n>.cut` if taken), durably.
fn quarantine(dir: &Path, id: &str, cut: &[u8]) -> Result<PathBuf, HarError> {
    let qdir = dir.join(QUARANTINE);
    fs::create_dir_all(&qdir).map_err(io_error(&qdir))?;
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for n in 0..10_000u32 {
        let name = if n == 0 {
            format!("{id}.{EXTENSION}.{ts}.cut")
        } else {
            format!("{id}.{EXTENSION}.{ts}.{n}.cut")
        };
        let path = qdir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(cut)
                    .and_then(|()| file.sync_data())
                    .map_err(io_error(&path))?;
                sync_dir(&qdir)?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
    }
    Err(io_error(&qdir)(io::Error::other(
        "no free quarantine file name",
    )))
}

/// Make a directory's entries (a new file, a rename) durable.
fn sync_dir(dir: &Path) -> Result<(), HarError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    options: RecorderOptions,
    sessions: HashMap<String, Session>,
    clock: u64,
    /// Held for the writer's life: one recorder per directory.
    _lock: File,
}

/// The lines of one session waiting for the batch's write and sync.
struct Pending {
    session: String,
    buf: Vec<u8>,
    waiters: Vec<(flume::Sender<Result<Recorded, HarError>>, Recorded)>,
}

impl Writer {
    fn run(mut self, rx: &flume::Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < self.options.max_batch {
                match rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            if let Some(close) = self.process(batch) {
                self.sessions.clear();
                let _ = close.send(());
                return;
            }
        }
    }

    /// Prepare every entry of the batch, write each touched file once, sync it once, answer
    /// every waiter. Returns the close request, if the batch held one.
    fn process(&mut self, batch: Vec<Msg>) -> Option<flume::Sender<()>> {
        let mut close = None;
        let mut pending: Vec<Pending> = Vec::new();
        for msg in batch {
            match msg {
                Msg::Close(reply) => close = Some(reply),
                Msg::Record(entry, reply) => match self.prepare(&entry) {
                    Ok((line, recorded)) => {
                        let index = match pending.iter().position(|p| p.session == entry.session) {
                            Some(index) => index,
                            None => {
                                pending.push(Pending {
                                    session: entry.session.clone(),
                                    buf: Vec::new(),
                                    waiters: Vec::new(),
                                });
                                pending.len() - 1
                            }
                        };
                        pending[index].buf.extend_from_slice(&line);
                        pending[index].waiters.push((reply, recorded));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
            }
        }
        self.flush(pending);
        self.evict();
        close
    }

    /// The line of one entry, chained to its session's last line; the session's chain state
    /// moves on (and is dropped if the batch's write fails).
    fn prepare(&mut self, entry: &Entry) -> Result<(Vec<u8>, Recorded), HarError> {
        validate_session_id(&entry.session)?;
        if !self.sessions.contains_key(&entry.session) {
            let session = open_session(&self.dir, &entry.session)?;
            self.sessions.insert(entry.session.clone(), session);
        }
        let value = entry_json(entry, &self.dir.join(BLOBS), &self.options)?;
        self.clock += 1;
        let Some(session) = self.sessions.get_mut(&entry.session) else {
            return Err(HarError::Closed);
        };
        session.used = self.clock;
        let line = build_line(
            &entry.session,
            session.seq,
            &session.prev,
            SystemTime::now(),
            &value,
        );
        let hash = leaf(&line[..line.len() - 1]);
        let recorded = Recorded {
            session: entry.session.clone(),
            seq: session.seq,
            hash,
        };
        session.seq += 1;
        session.prev = hash;
        Ok((line, recorded))
    }

    /// Write and sync each session's lines, then answer its waiters. A session whose write or
    /// sync fails is cut back to its last durable length (best effort) and forgotten, so that
    /// the next entry reopens it through recovery; its waiters get the error.
    fn flush(&mut self, pending: Vec<Pending>) {
        for p in pending {
            let result = match self.sessions.get_mut(&p.session) {
                Some(session) => session
                    .file
                    .write_all(&p.buf)
                    .and_then(|()| session.file.sync_data())
                    .map(|()| session.len += p.buf.len() as u64)
                    .map_err(|e| (session.path.clone(), e)),
                None => Err((
                    self.dir.join(format!("{}.{EXTENSION}", p.session)),
                    io::Error::other("the session's state was lost"),
                )),
            };
            match result {
                Ok(()) => {
                    for (reply, recorded) in p.waiters {
                        let _ = reply.send(Ok(recorded));
                    }
                }
                Err((path, e)) => {
                    tracing::error!(
                        session = %p.session,
                        path = %path.display(),
                        error = %e,
                        "writing a session recording failed"
                    );
                    if let Some(session) = self.sessions.remove(&p.session) {
                        let _ = session.file.set_len(session.len);
                    }
                    for (reply, _) in p.waiters {
                        let _ = reply.send(Err(HarError::Io {
                            path: path.clone(),
                            source: io::Error::new(e.kind(), e.to_string()),
                        }));
                    }
                }
            }
        }
    }

    /// Close the least recently used files beyond `max_open_files`.
    fn evict(&mut self) {
        while self.sessions.len() > self.options.max_open_files {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    self.sessions.remove(&id);
                }
                None => break,
            }
        }
    }
}

/// `SHA-256(0x00 || line)`, the audit log's leaf hash.
fn leaf(line: &[u8]) -> Hash {
    leaf_hash(line)
}

/// One stored line, `\n` included.
fn build_line(session: &str, seq: u64, prev: &Hash, ts: SystemTime, entry: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(format!("{{\"v\":{VERSION},\"session\":").as_bytes());
    push_json(&mut out, &Value::from(session));
    out.extend_from_slice(
        format!(
            ",\"seq\":{seq},\"prev\":\"{}\",\"ts\":\"{}\",\"entry\":",
            encode_hash(prev),
            format_ts(ts)
        )
        .as_bytes(),
    );
    push_json(&mut out, entry);
    out.extend_from_slice(b"}\n");
    out
}

fn push_json(out: &mut Vec<u8>, value: &Value) {
    // Serialising a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// A duration in HAR's unit: milliseconds, to the microsecond.
fn millis(d: Duration) -> Value {
    json!(d.as_micros() as f64 / 1000.0)
}

/// The HAR entry of `e`, credentials redacted, bodies inline, as blobs or only hashed.
fn entry_json(e: &Entry, blobs: &Path, options: &RecorderOptions) -> Result<Value, HarError> {
    let (url, query) = redact_url_and_query(&e.url);
    let mut request = Map::new();
    request.insert("method".into(), json!(e.method));
    request.insert("url".into(), json!(url));
    request.insert("httpVersion".into(), json!(e.http_version));
    request.insert("cookies".into(), json!([]));
    request.insert("headers".into(), headers_json(&e.request_headers));
    request.insert(
        "queryString".into(),
        Value::Array(
            query
                .into_iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect(),
        ),
    );
    if let Some(body) = &e.request_body {
        let mut post = Map::new();
        let mime = mime_of(&e.request_mime, &e.request_headers);
        post.insert("mimeType".into(), json!(mime));
        store_body(&mut post, body, blobs, options)?;
        request.insert("postData".into(), Value::Object(post));
    }
    request.insert("headersSize".into(), json!(-1));
    request.insert(
        "bodySize".into(),
        json!(e.request_body.as_ref().map_or(0, Vec::len)),
    );

    let mut content = Map::new();
    let response_len = e.response_body.as_ref().map_or(0, Vec::len);
    content.insert("size".into(), json!(response_len));
    content.insert(
        "mimeType".into(),
        json!(mime_of(&e.response_mime, &e.response_headers)),
    );
    if let Some(body) = &e.response_body {
        store_body(&mut content, body, blobs, options)?;
    }
    let redirect = header(&e.response_headers, "location").map_or_else(String::new, redact_url);
    let response = json!({
        "status": e.status,
        "statusText": e.status_text,
        "httpVersion": e.http_version,
        "cookies": [],
        "headers": headers_json(&e.response_headers),
        "content": content,
        "redirectURL": redirect,
        "headersSize": -1,
        "bodySize": response_len,
    });

    let timings = e.timings.unwrap_or(Timings {
        send: Duration::ZERO,
        wait: e.duration,
        receive: Duration::ZERO,
    });
    let mut entry = Map::new();
    entry.insert("startedDateTime".into(), json!(format_ts(e.started)));
    entry.insert("time".into(), millis(e.duration));
    entry.insert("request".into(), Value::Object(request));
    entry.insert("response".into(), response);
    entry.insert("cache".into(), json!({}));
    entry.insert(
        "timings".into(),
        json!({
            "send": millis(timings.send),
            "wait": millis(timings.wait),
            "receive": millis(timings.receive),
        }),
    );
    entry.insert("_requestId".into(), json!(e.request_id));
    if let Some(seq) = e.audit_seq {
        entry.insert("_auditSeq".into(), json!(seq));
    }
    entry.insert("_decision".into(), json!(e.decision));
    entry.insert("_findings".into(), e.findings.clone());
    if let Some(trace) = &e.trace_id {
        entry.insert("_traceId".into(), json!(trace));
    }
    if let Some(principal) = &e.principal {
        entry.insert("_principal".into(), json!(principal));
    }
    Ok(Value::Object(entry))
}

/// The explicit MIME type, else the `Content-Type` header's, else empty.
fn mime_of(explicit: &str, headers: &[(String, String)]) -> String {
    if explicit.is_empty() {
        header(headers, "content-type")
            .unwrap_or_default()
            .to_string()
    } else {
        explicit.to_string()
    }
}

/// Put a body into `postData` or `content`: `text` (with `"encoding":"base64"` if not UTF-8)
/// up to the blob threshold, `_blob` up to the hard cap, else only `_sha256` and `_truncated`.
fn store_body(
    into: &mut Map<String, Value>,
    body: &[u8],
    blobs: &Path,
    options: &RecorderOptions,
) -> Result<(), HarError> {
    if body.len() > options.max_body {
        into.insert("_sha256".into(), json!(hex::encode(Sha256::digest(body))));
        into.insert("_truncated".into(), json!(true));
    } else if body.len() > options.blob_threshold {
        let name = hex::encode(Sha256::digest(body));
        write_blob(blobs, &name, body)?;
        into.insert("_blob".into(), json!(name));
    } else {
        insert_text(into, body);
    }
    Ok(())
}

/// `text`, base64 with `"encoding":"base64"` when not UTF-8.
fn insert_text(into: &mut Map<String, Value>, body: &[u8]) {
    match std::str::from_utf8(body) {
        Ok(text) => {
            into.insert("text".into(), json!(text));
        }
        Err(_) => {
            into.insert("text".into(), json!(BASE64.encode(body)));
            into.insert("encoding".into(), json!("base64"));
        }
    }
}

/// Write blob `name` once: temporary file, `fdatasync`, rename, directory `fsync`.
fn write_blob(blobs: &Path, name: &str, body: &[u8]) -> Result<(), HarError> {
    let path = blobs.join(name);
    if path.exists() {
        return Ok(());
    }
    fs::create_dir_all(blobs).map_err(io_error(blobs))?;
    let temporary = blobs.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(body)?;
            file.sync_data()
        })
        .and_then(|()| fs::rename(&temporary, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temporary);
        return Err(io_error(&path)(e));
    }
    sync_dir(blobs)
}

/// A line that verifies.
struct Good {
    /// Its `ts`, as written.
    ts: String,
    /// Its leaf hash.
    leaf: Hash,
    /// Its `entry`, if asked for.
    entry: Option<Map<String, Value>>,
}

/// The first line that does not verify.
struct Broken {
    seq: u64,
    reason: String,
}

/// A session file, checked line by line up to the first bad line.
struct Scan {
    good: Vec<Good>,
    /// The bytes covered by the good lines.
    good_len: usize,
    broken: Option<Broken>,
}

/// Check `bytes` as session `session`'s file: every line complete, in the format, numbered
/// from 0 and chained from the genesis hash.
fn scan(session: &str, bytes: &[u8], keep_entries: bool) -> Scan {
    let mut good = Vec::new();
    let mut prev = genesis(session);
    let mut pos = 0;
    let mut broken = None;
    while pos < bytes.len() {
        let seq = good.len() as u64;
        let Some(n) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            broken = Some(Broken {
                seq,
                reason: format!(
                    "torn line: {} bytes without a final newline",
                    bytes.len() - pos
                ),
            });
            break;
        };
        let line = &bytes[pos..pos + n];
        match check_line(session, seq, &prev, line) {
            Ok((ts, entry)) => {
                let leaf = leaf(line);
                good.push(Good {
                    ts,
                    leaf,
                    entry: keep_entries.then_some(entry),
                });
                prev = leaf;
                pos += n + 1;
            }
            Err(reason) => {
                broken = Some(Broken { seq, reason });
                break;
            }
        }
    }
    Scan {
        good,
        good_len: pos,
        broken,
    }
}

/// Check one line (without its `\n`) as the `seq`th of `session`, after a line with leaf
/// `prev`. Returns its `ts` and `entry`, or why not.
fn check_line(
    session: &str,
    seq: u64,
    prev: &Hash,
    line: &[u8],
) -> Result<(String, Map<String, Value>), String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("unparsable line: {e}"))?;
    let Value::Object(mut fields) = value else {
        return Err("not a JSON object".into());
    };
    let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    if keys != LINE_KEYS {
        return Err(format!("the keys are {keys:?}, not {LINE_KEYS:?}"));
    }
    if fields["v"].as_u64() != Some(VERSION) {
        return Err(format!("`v` is {}, not {VERSION}", fields["v"]));
    }
    if fields["session"].as_str() != Some(session) {
        return Err(format!(
            "`session` is {}, not {session:?}",
            fields["session"]
        ));
    }
    if fields["seq"].as_u64() != Some(seq) {
        return Err(format!("`seq` is {}, expected {seq}", fields["seq"]));
    }
    match fields["prev"].as_str().and_then(decode_hash) {
        Some(p) if p == *prev => {}
        Some(_) => return Err("`prev` is not the previous line's hash".into()),
        None => return Err("`prev` is not a base64 SHA-256".into()),
    }
    let ts = fields["ts"]
        .as_str()
        .filter(|ts| humantime::parse_rfc3339(ts).is_ok())
        .ok_or("`ts` is not an RFC 3339 time")?
        .to_string();
    match fields.remove("entry") {
        Some(Value::Object(entry)) => Ok((ts, entry)),
        _ => Err("`entry` is not an object".into()),
    }
}

/// Read session `session`'s file.
fn read_session(dir: &Path, session: &str) -> Result<Vec<u8>, HarError> {
    let path = session_path(dir, session)?;
    fs::read(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => HarError::NotFound(session.to_string()),
        _ => io_error(&path)(e),
    })
}

/// Every session in `dir`, oldest first (by the first line's `ts`, then id), with its entry
/// count, first and last `ts`, size, and whether its chain holds (else the first broken `seq`).
/// Blobs are not read; [`verify_chain`] checks them.
pub fn list(dir: &Path) -> Result<Vec<SessionSummary>, HarError> {
    let mut sessions = Vec::new();
    for id in session_ids(dir)? {
        let bytes = read_session(dir, &id)?;
        let scanned = scan(&id, &bytes, false);
        sessions.push(SessionSummary {
            entries: scanned.good.len() as u64,
            first_ts: scanned.good.first().map(|g| g.ts.clone()),
            last_ts: scanned.good.last().map(|g| g.ts.clone()),
            bytes: bytes.len() as u64,
            broken: scanned.broken.as_ref().map(|b| b.seq),
            problem: scanned.broken.map(|b| b.reason),
            id,
        });
    }
    sessions.sort_by(|a, b| (&a.first_ts, &a.id).cmp(&(&b.first_ts, &b.id)));
    Ok(sessions)
}

/// Check session `session`'s chain and the blobs its entries refer to. Returns the number of
/// entries that verify and, if one does not, its `seq` (a torn, unparsable or mis-chained line,
/// or a missing or altered blob). An edit of line `n` that still parses shows at `n + 1`; an
/// edit of the last line or a tail cut at a line boundary only shows against the entry hashes
/// held in the audit log (see [`entry_hashes`]).
pub fn verify_chain(dir: &Path, session: &str) -> Result<(u64, Option<u64>), HarError> {
    let bytes = read_session(dir, session)?;
    let scanned = scan(session, &bytes, true);
    let blobs = dir.join(BLOBS);
    for (seq, good) in scanned.good.iter().enumerate() {
        let seq = seq as u64;
        let mut entry = good.entry.clone().unwrap_or_default();
        if inline_blobs(&blobs, session, seq, &mut entry).is_err() {
            return Ok((seq, Some(seq)));
        }
    }
    Ok((scanned.good.len() as u64, scanned.broken.map(|b| b.seq)))
}

/// The leaf hash of every line of session `session` that verifies, in `seq` order: what the
/// audit log's completion records hold, for an auditor to compare.
pub fn entry_hashes(dir: &Path, session: &str) -> Result<Vec<Hash>, HarError> {
    let bytes = read_session(dir, session)?;
    Ok(scan(session, &bytes, false)
        .good
        .into_iter()
        .map(|g| g.leaf)
        .collect())
}

/// Session `session` as a standard HAR 1.2 document:
/// `{"log":{"version":"1.2","creator":{"name":"portcullis","version":…},"pages":[],"entries":[…]}}`,
/// blob bodies inlined (base64 with `"encoding":"base64"` when not UTF-8), each entry with
/// `_recordingSeq` and `_entryHash` (base64 leaf hash, as in the audit log) added. Refuses a
/// broken chain or a missing or altered blob, naming the `seq`.
pub fn export(dir: &Path, session: &str) -> Result<Value, HarError> {
    let bytes = read_session(dir, session)?;
    let scanned = scan(session, &bytes, true);
    if let Some(broken) = scanned.broken {
        return Err(HarError::Broken {
            session: session.to_string(),
            seq: broken.seq,
            reason: broken.reason,
        });
    }
    let blobs = dir.join(BLOBS);
    let mut entries = Vec::with_capacity(scanned.good.len());
    for (seq, good) in scanned.good.into_iter().enumerate() {
        let seq = seq as u64;
        let mut entry = good.entry.unwrap_or_default();
        inline_blobs(&blobs, session, seq, &mut entry)?;
        entry.insert("_recordingSeq".into(), json!(seq));
        entry.insert("_entryHash".into(), json!(encode_hash(&good.leaf)));
        entries.push(Value::Object(entry));
    }
    Ok(json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "portcullis", "version": env!("CARGO_PKG_VERSION")},
            "pages": [],
            "entries": entries,
        }
    }))
}

/// Put the bodies of `request.postData` and `response.content` that are blobs back as `text`,
/// after checking each blob against its name.
fn inline_blobs(
    blobs: &Path,
    session: &str,
    seq: u64,
    entry: &mut Map<String, Value>,
) -> Result<(), HarError> {
    for (part, body) in [("request", "postData"), ("response", "content")] {
        let Some(Value::Object(body)) = entry
            .get_mut(part)
            .and_then(|p| p.as_object_mut())
            .and_then(|p| p.get_mut(body))
        else {
            continue;
        };
        let Some(name) = body.get("_blob") else {
            continue;
        };
        let name = name.as_str().unwrap_or_default().to_string();
        let fail = |reason: &str| HarError::Blob {
            session: session.to_string(),
            seq,
            blob: name.chars().take(80).collect(),
            reason: reason.to_string(),
        };
        let valid = name.len() == 64
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(fail("not a SHA-256 in lowercase hex"));
        }
        let data = fs::read(blobs.join(&name)).map_err(|e| fail(&e.to_string()))?;
        if hex::encode(Sha256::digest(&data)) != name {
            return Err(fail("its content does not match its hash"));
        }
        insert_text(body, &data);
    }
    Ok(())
}
