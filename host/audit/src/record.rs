//! One record line: how it is written (head keys in a fixed order, then the type's fields), how
//! it chains to the previous line (`prev`), and how it is read back.
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::merkle::{Hash, leaf_hash};

/// The format version written in every record's `v`.
pub const VERSION: u64 = 1;

/// The keys every record starts with, in this order.
pub const HEAD_KEYS: [&str; 8] = ["v", "log", "seq", "epoch", "ts", "prev", "id", "type"];

/// The `prev` of record 0: `SHA-256("portcullis-audit-v1 genesis\n" || origin)`.
pub fn genesis(origin: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(b"portcullis-audit-v1 genesis\n");
    h.update(origin.as_bytes());
    h.finalize().into()
}

/// RFC 3339 UTC with microseconds: `2026-11-29T02:33:01.123456Z`.
pub fn format_ts(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// Standard padded base64 of a hash, as `prev`, frontiers and roots are written.
pub fn encode_hash(hash: &Hash) -> String {
    BASE64.encode(hash)
}

/// A hash from standard padded base64.
pub fn decode_hash(text: &str) -> Option<Hash> {
    BASE64.decode(text).ok()?.try_into().ok()
}

/// The head of a record: everything but the type's own fields.
#[derive(Debug, Clone)]
pub struct Head<'a> {
    /// The log's origin.
    pub log: &'a str,
    /// The record's position in the log.
    pub seq: u64,
    /// The writer's start count.
    pub epoch: u64,
    /// When it was written.
    pub ts: SystemTime,
    /// The previous line's leaf hash (or the genesis hash).
    pub prev: Hash,
    /// The record's type, e.g. `request.decision`.
    pub kind: &'a str,
}

/// Write one record line, `\n` included, into `out`. Fields whose names are head keys are
/// refused rather than shadowing the head.
pub fn write_line(out: &mut Vec<u8>, head: &Head<'_>, fields: &Map<String, Value>) {
    let start = out.len();
    out.extend_from_slice(b"{\"v\":");
    out.extend_from_slice(VERSION.to_string().as_bytes());
    out.extend_from_slice(b",\"log\":");
    push_json(out, &Value::from(head.log));
    out.extend_from_slice(format!(",\"seq\":{},\"epoch\":{}", head.seq, head.epoch).as_bytes());
    out.extend_from_slice(format!(",\"ts\":\"{}\"", format_ts(head.ts)).as_bytes());
    out.extend_from_slice(format!(",\"prev\":\"{}\"", encode_hash(&head.prev)).as_bytes());
    out.extend_from_slice(format!(",\"id\":\"{}\"", uuid::Uuid::new_v4()).as_bytes());
    out.extend_from_slice(b",\"type\":");
    push_json(out, &Value::from(head.kind));
    for (key, value) in fields {
        if HEAD_KEYS.contains(&key.as_str()) {
            continue;
        }
        out.push(b',');
        push_json(out, &Value::from(key.as_str()));
        out.push(b':');
        push_json(out, value);
    }
    out.extend_from_slice(b"}\n");
    debug_assert!(!out[start..out.len() - 1].contains(&b'\n'));
}

fn push_json(out: &mut Vec<u8>, value: &Value) {
    // Serialising a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Why a stored line is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not a JSON object.
    #[error("not a JSON object: {0}")]
    Json(String),
    /// A head key is missing, misplaced or of the wrong type.
    #[error("bad head: {0}")]
    Head(String),
}

/// A record read back from its stored bytes.
#[derive(Debug, Clone)]
pub struct Record {
    /// `v`.
    pub v: u64,
    /// `log`.
    pub log: String,
    /// `seq`.
    pub seq: u64,
    /// `epoch`.
    pub epoch: u64,
    /// `ts`, as written.
    pub ts: String,
    /// `prev`, decoded.
    pub prev: Hash,
    /// `id`.
    pub id: String,
    /// `type`.
    pub kind: String,
    /// The whole object, head included.
    pub fields: Map<String, Value>,
    /// `SHA-256(0x00 || line)`.
    pub leaf: Hash,
}

impl Record {
    /// Parse one line (without its `\n`). The head keys must come first, in order.
    pub fn parse(line: &[u8]) -> Result<Self, LineError> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| LineError::Json(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(LineError::Json("not an object".into()));
        };
        let keys: Vec<&str> = fields
            .keys()
            .take(HEAD_KEYS.len())
            .map(|k| k.as_str())
            .collect();
        if keys != HEAD_KEYS {
            return Err(LineError::Head(format!(
                "the first keys are {keys:?}, not {HEAD_KEYS:?}"
            )));
        }
        let int = |k: &str| {
            fields[k]
                .as_u64()
                .ok_or_else(|| LineError::Head(format!("`{k}` is not an unsigned integer")))
        };
        let text = |k: &str| {
            fields[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| LineError::Head(format!("`{k}` is not a string")))
        };
        let prev = decode_hash(&text("prev")?)
            .ok_or_else(|| LineError::Head("`prev` is not a base64 SHA-256".into()))?;
        Ok(Record {
            v: int("v")?,
            log: text("log")?,
            seq: int("seq")?,
            epoch: int("epoch")?,
            ts: text("ts")?,
            prev,
            id: text("id")?,
            kind: text("type")?,
            leaf: leaf_hash(line),
            fields,
        })
    }

    /// `ts` as a time, if it parses.
    pub fn time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.ts).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(fields: Value) -> Vec<u8> {
        let mut out = Vec::new();
        let Value::Object(map) = fields else {
            panic!("fields must be an object")
        };
        write_line(
            &mut out,
            &Head {
                log: "test.example/log",
                seq: 7,
                epoch: 2,
                ts: SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_micros(1_700_000_000_123_456),
                prev: genesis("test.example/log"),
                kind: "request.decision",
            },
            &map,
        );
        out
    }

    #[test]
    fn a_written_line_reads_back_with_its_head_and_fields() {
        let out = line(json!({"route": "blob", "seq": 99, "n": {"a": [1, 2]}}));
        assert_eq!(out.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&out).expect("utf-8");
        assert!(
            text.starts_with(
                "{\"v\":1,\"log\":\"test.example/log\",\"seq\":7,\"epoch\":2,\"ts\":\"2023-11-14T22:13:20.123456Z\",\"prev\":\""
            ),
            "{text}"
        );
        let record = Record::parse(&out[..out.len() - 1]).expect("parses");
        assert_eq!(
            record.seq, 7,
            "a field named like a head key never shadows it"
        );
        assert_eq!(record.kind, "request.decision");
        assert_eq!(record.fields["route"], "blob");
        assert_eq!(record.prev, genesis("test.example/log"));
        assert_eq!(record.leaf, leaf_hash(&out[..out.len() - 1]));
    }

    #[test]
    fn a_line_with_reordered_head_keys_is_refused() {
        let out = br#"{"log":"x","v":1,"seq":0,"epoch":1,"ts":"t","prev":"","id":"i","type":"t"}"#;
        assert!(matches!(Record::parse(out), Err(LineError::Head(_))));
    }

    #[test]
    fn genesis_depends_on_the_origin() {
        assert_ne!(genesis("a"), genesis("b"));
    }
}
