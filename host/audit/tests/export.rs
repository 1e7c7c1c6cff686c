//! `audit export --format ocsf`: records become OCSF API Activity events, one JSON object per
//! line, each pointing back to its record (seq, origin, leaf, segment); segment markers are left
//! out, unparsable and torn lines are counted and never written, credentials never leave.
use std::path::Path;
use std::time::{Duration, SystemTime};

use portcullis_audit::export::{self, ExportSummary};
use portcullis_audit::merkle;
use portcullis_audit::record::{self, Head, Record};
use portcullis_audit::segment;
use serde_json::{Map, Value, json};

const ORIGIN: &str = "test.portcullis/export";

/// 2026-11-29T02:33:01.123456Z
fn at(seq: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_919_581_123_456 + seq * 1_000)
}

/// A hand-built segment: chained lines from `first_seq`, `segment.open` first.
struct Builder {
    bytes: Vec<u8>,
    lines: Vec<Vec<u8>>,
    seq: u64,
    prev: merkle::Hash,
}

impl Builder {
    fn new(number: u64, first_seq: u64, prev: merkle::Hash) -> Self {
        let mut builder = Builder {
            bytes: Vec::new(),
            lines: Vec::new(),
            seq: first_seq,
            prev,
        };
        builder.push(
            "segment.open",
            json!({"segment": number, "frontier": {"size": first_seq, "hashes": []}}),
        );
        builder
    }

    fn push(&mut self, kind: &str, fields: Value) -> &mut Self {
        let Value::Object(fields) = fields else {
            panic!("fields must be an object")
        };
        let start = self.bytes.len();
        record::write_line(
            &mut self.bytes,
            &Head {
                log: ORIGIN,
                seq: self.seq,
                epoch: 1,
                ts: at(self.seq),
                prev: self.prev,
                kind,
            },
            &fields,
        );
        let line = self.bytes[start..self.bytes.len() - 1].to_vec();
        self.prev = merkle::leaf_hash(&line);
        self.lines.push(line);
        self.seq += 1;
        self
    }

    fn write(&self, dir: &Path, number: u64) {
        std::fs::write(dir.join(segment::name(number)), &self.bytes).expect("write a segment");
    }
}

fn decision(method: &str, decision: &str, request_id: &str) -> Value {
    let mut fields = json!({
        "request_id": request_id,
        "route": "github",
        "operation": "issues.list",
        "method": method,
        "target": "api.github.com/repos/acme/app/issues?state=open",
        "source": {"addr": "203.0.113.7:51234", "tls": {"version": "TLSv1.3"}},
        "principal": {
            "iss": "https://login.microsoftonline.com/5f0e/v2.0",
            "sub": "agent-7",
            "tenant": "5f0e",
            "app_id": "c0ffee",
            "roles": ["reader"]
        },
        "rule": "agents-read-issues",
        "plugins": ["jwt", "mask"],
        "decision": decision,
        "by": "rules",
        "reason": "matched agents-read-issues"
    });
    if decision == "deny" {
        fields["code"] = json!("rule.denied");
    }
    fields
}

/// One log: a decision, its completion, a denied delete and an auth failure.
fn sample(dir: &Path) -> Builder {
    let mut b = Builder::new(1, 0, record::genesis(ORIGIN));
    b.push("request.decision", decision("GET", "allow", "r-1"))
        .push(
            "request.completion",
            json!({
                "request_id": "r-1",
                "decision_seq": 1,
                "status": 200,
                "latency_us": 48_250,
                "upstream": {"status": 200, "request_id": "GH-1"},
                "findings": [{"kind": "email", "location": "response.body", "count": 2}],
                "bodies": {"request_sha256": "00", "response_sha256": "11", "response_bytes": 5120},
                "recording": {"session": "s-1", "seq": 0, "hash": "AA=="},
                "outcome": "ok"
            }),
        )
        .push("request.decision", decision("DELETE", "deny", "r-2"))
        .push(
            "auth.failed",
            json!({
                "request_id": "r-3",
                "route": "github",
                "source": {"addr": "[2001:db8::9]:443", "tls": true},
                "reason": "token expired"
            }),
        );
    b.write(dir, 1);
    b
}

fn export(dir: &Path) -> (ExportSummary, Vec<Value>, String) {
    let mut out = Vec::new();
    let summary = export::export_ocsf(dir, &mut out).expect("export");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.is_empty() || text.ends_with('\n'), "{text}");
    let events = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect();
    (summary, events, text)
}

fn keys(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                found.push(k.to_ascii_lowercase());
                keys(v, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, found)),
        _ => {}
    }
}

#[test]
fn decisions_completions_and_auth_failures_become_api_activity_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample(dir.path());
    let (summary, events, _) = export(dir.path());
    assert_eq!(summary.segments, 1);
    assert_eq!(summary.lines, 5);
    assert_eq!(summary.exported, 4);
    assert_eq!(summary.not_exported, 1, "segment.open is left out");
    assert!(summary.is_clean(), "{summary}");
    assert_eq!((summary.first_seq, summary.last_seq), (Some(1), Some(4)));

    for event in &events {
        assert_eq!(event["class_uid"], 6003);
        assert_eq!(event["category_uid"], 6);
        assert_eq!(
            event["type_uid"].as_u64(),
            Some(600_300 + event["activity_id"].as_u64().expect("activity_id"))
        );
        assert_eq!(event["metadata"]["version"], export::OCSF_VERSION);
        assert_eq!(event["metadata"]["product"]["name"], "Portcullis");
        assert_eq!(event["metadata"]["product"]["vendor_name"], "Portcullis");
        assert_eq!(
            event["time"],
            1_795_919_581_123 + event["unmapped"]["seq"].as_u64().expect("seq")
        );
    }

    let allow = &events[0];
    assert_eq!(allow["unmapped"]["type"], "request.decision");
    assert_eq!(
        (allow["activity_id"].clone(), allow["activity_name"].clone()),
        (json!(2), json!("Read"))
    );
    assert_eq!(
        (allow["status_id"].clone(), allow["status"].clone()),
        (json!(1), json!("Success"))
    );
    assert_eq!(
        (allow["disposition_id"].clone(), allow["action_id"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(allow["severity_id"], 1);
    assert_eq!(allow["api"]["operation"], "issues.list");
    assert_eq!(allow["api"]["request"]["uid"], "r-1");
    assert_eq!(allow["api"]["service"]["name"], "github");
    assert_eq!(allow["metadata"]["correlation_uid"], "r-1");
    assert_eq!(allow["actor"]["user"]["uid"], "agent-7");
    assert_eq!(allow["actor"]["idp"]["tenant_uid"], "5f0e");
    assert_eq!(allow["actor"]["app_uid"], "c0ffee");
    assert_eq!(allow["actor"]["authorizations"][0]["decision"], "allow");
    assert_eq!(
        allow["actor"]["authorizations"][0]["policy"]["name"],
        "agents-read-issues"
    );
    assert_eq!(
        allow["src_endpoint"],
        json!({"ip": "203.0.113.7", "port": 51234})
    );
    assert_eq!(allow["http_request"]["http_method"], "GET");
    assert_eq!(allow["http_request"]["url"]["hostname"], "api.github.com");
    assert_eq!(
        allow["http_request"]["url"]["path"],
        "/repos/acme/app/issues"
    );
    assert_eq!(allow["http_request"]["url"]["query_string"], "state=open");
    assert_eq!(allow["dst_endpoint"]["hostname"], "api.github.com");
    let rest = &allow["unmapped"]["fields"];
    assert_eq!(rest["by"], "rules");
    assert_eq!(rest["plugins"], json!(["jwt", "mask"]));
    assert_eq!(rest["principal"], json!({"roles": ["reader"]}));
    assert_eq!(rest["source"], json!({"tls": {"version": "TLSv1.3"}}));
    assert!(
        rest.get("method").is_none() && rest.get("target").is_none(),
        "{rest}"
    );

    let completion = &events[1];
    assert_eq!(completion["unmapped"]["type"], "request.completion");
    assert_eq!(
        completion["activity_id"], 0,
        "a completion carries no method"
    );
    assert_eq!(completion["status_id"], 1);
    assert_eq!(
        completion["http_response"],
        json!({"code": 200, "body_length": 5120})
    );
    assert_eq!(completion["duration"], 48);
    assert_eq!(completion["api"]["request"]["uid"], "r-1");
    assert_eq!(completion["metadata"]["correlation_uid"], "r-1");
    assert_eq!(completion["unmapped"]["fields"]["decision_seq"], 1);
    assert_eq!(
        completion["unmapped"]["fields"]["upstream"]["request_id"],
        "GH-1"
    );
    assert_eq!(
        completion["unmapped"]["fields"]["recording"]["session"],
        "s-1"
    );
    assert!(completion.get("disposition_id").is_none());

    let deny = &events[2];
    assert_eq!(
        (deny["activity_id"].clone(), deny["activity_name"].clone()),
        (json!(4), json!("Delete"))
    );
    assert_eq!(
        (deny["status_id"].clone(), deny["status"].clone()),
        (json!(2), json!("Failure"))
    );
    assert_eq!(
        (deny["disposition_id"].clone(), deny["disposition"].clone()),
        (json!(2), json!("Blocked"))
    );
    assert_eq!(
        (deny["action_id"].clone(), deny["action"].clone()),
        (json!(2), json!("Denied"))
    );
    assert_eq!(deny["severity_id"], 2);
    assert_eq!(deny["status_code"], "rule.denied");
    assert_eq!(deny["status_detail"], "matched agents-read-issues");
    assert_eq!(deny["metadata"]["profiles"], json!(["security_control"]));

    let failed = &events[3];
    assert_eq!(failed["unmapped"]["type"], "auth.failed");
    assert_eq!(failed["status_id"], 2);
    assert_eq!(failed["disposition_id"], 2);
    assert_eq!(failed["severity_id"], 3);
    assert_eq!(failed["status_detail"], "token expired");
    assert_eq!(
        failed["src_endpoint"],
        json!({"ip": "2001:db8::9", "port": 443})
    );
    assert_eq!(failed["api"]["operation"], "auth.failed");
}

#[test]
fn every_event_points_back_to_its_record_and_leaf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let built = sample(dir.path());
    let (_, events, _) = export(dir.path());
    for (event, line) in events.iter().zip(&built.lines[1..]) {
        let record = Record::parse(line).expect("a record");
        assert_eq!(event["unmapped"]["seq"], record.seq);
        assert_eq!(event["unmapped"]["log"], ORIGIN);
        assert_eq!(event["unmapped"]["epoch"], 1);
        assert_eq!(event["unmapped"]["type"], record.kind.as_str());
        assert_eq!(
            event["unmapped"]["leaf"],
            record::encode_hash(&merkle::leaf_hash(line)).as_str()
        );
        assert_eq!(event["unmapped"]["segment"], "segment-000001.jsonl");
        assert_eq!(event["metadata"]["log_name"], "segment-000001.jsonl");
        assert_eq!(event["metadata"]["uid"], record.id.as_str());
        assert_eq!(event["metadata"]["sequence"], record.seq);
        assert_eq!(event["metadata"]["original_time"], record.ts.as_str());
        assert_eq!(event["metadata"]["event_code"], record.kind.as_str());
    }
}

#[test]
fn no_credential_field_leaves_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = Builder::new(1, 0, record::genesis(ORIGIN));
    let mut planted = decision("POST", "allow", "r-9");
    planted["headers"] = json!({"Authorization": "Bearer eyJ", "accept": "application/json"});
    planted["token"] = json!("eyJ");
    planted["principal"]["token"] = json!("eyJ");
    b.push("request.decision", planted).push(
        "config.loaded",
        json!({"generation": 3, "trigger": "watch", "plugins": [
            {"alias": "jwt", "name": "jwt", "version": "1.0.0", "sha256": "ab", "token": "x"}
        ]}),
    );
    b.write(dir.path(), 1);
    let (summary, events, text) = export(dir.path());
    assert_eq!(summary.exported, 2);
    for event in &events {
        let mut found = Vec::new();
        keys(event, &mut found);
        assert!(
            !found.iter().any(|k| k == "authorization" || k == "token"),
            "{found:?}"
        );
    }
    assert!(!text.contains("Bearer") && !text.contains("eyJ"), "{text}");
    assert_eq!(events[0]["activity_name"], "Create");
    assert_eq!(
        events[0]["unmapped"]["fields"]["headers"],
        json!({"accept": "application/json"})
    );
}

#[test]
fn lifecycle_records_are_exported_as_other_and_segment_markers_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = Builder::new(1, 0, record::genesis(ORIGIN));
    b.push(
        "gateway.start",
        json!({"version": "0.1.0", "durability": "strict"}),
    )
    .push(
        "config.rejected",
        json!({"trigger": "watch", "error": "plugin.hash"}),
    )
    .push(
        "log.recovered",
        json!({"cut_at": 4096, "quarantined": "quarantine/x"}),
    )
    .push(
        "approval.requested",
        json!({"request_id": "r-5", "approvers": ["ops"]}),
    )
    .push("segment.close", json!({"segment": 1, "next": 2}));
    b.write(dir.path(), 1);
    let (summary, events, _) = export(dir.path());
    assert_eq!((summary.exported, summary.not_exported), (4, 2));
    for event in &events {
        assert_eq!(event["class_uid"], 6003);
        assert_eq!(
            (event["activity_id"].clone(), event["type_uid"].clone()),
            (json!(99), json!(600_399))
        );
        assert_eq!(event["actor"]["app_name"], "Portcullis");
        assert_eq!(event["api"]["operation"], event["unmapped"]["type"]);
    }
    assert_eq!(events[0]["status_id"], 1);
    assert_eq!(events[0]["unmapped"]["fields"]["durability"], "strict");
    assert_eq!(
        (
            events[1]["status_id"].clone(),
            events[1]["severity_id"].clone()
        ),
        (json!(2), json!(2))
    );
    assert_eq!(events[1]["status_detail"], "plugin.hash");
    assert_eq!(events[2]["severity_id"], 3);
    assert_eq!(events[3]["status_id"], 0);
    assert_eq!(events[3]["api"]["request"]["uid"], "r-5");

    let segment_open = Record::parse(&b.lines[0]).expect("a record");
    assert!(export::to_ocsf(&segment_open).is_none());
}

#[test]
fn unparsable_and_torn_lines_are_counted_and_never_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = Builder::new(1, 0, record::genesis(ORIGIN));
    b.push("request.decision", decision("GET", "allow", "r-1"));
    let mut bytes = b.bytes.clone();
    bytes.extend_from_slice(b"{\"not\":\"a record\"}\n");
    bytes.extend_from_slice(b"\0\0\0\0\n");
    bytes.extend_from_slice(b"\n");
    b.push("request.decision", decision("GET", "deny", "r-2"));
    let last = b.lines.last().expect("a line");
    bytes.extend_from_slice(last);
    bytes.push(b'\n');
    bytes.extend_from_slice(&last[..last.len() / 2]);
    std::fs::write(dir.path().join(segment::name(1)), &bytes).expect("write");
    let (summary, events, text) = export(dir.path());
    assert_eq!(summary.exported, 2, "{text}");
    assert_eq!(summary.unparsable, 3);
    assert_eq!(summary.incomplete, 1);
    assert!(!summary.is_clean());
    assert!(summary.to_string().contains("audit verify"), "{summary}");
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["class_uid"] == 6003));
}

#[test]
fn segments_are_exported_in_number_order_and_other_files_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = Builder::new(1, 0, record::genesis(ORIGIN));
    first.push("request.decision", decision("GET", "allow", "r-1"));
    first.push("segment.close", json!({"segment": 1, "next": 2}));
    let mut second = Builder::new(2, first.seq, first.prev);
    second.push("request.decision", decision("PUT", "allow", "r-2"));
    second.write(dir.path(), 2);
    first.write(dir.path(), 1);
    std::fs::write(dir.path().join(segment::CHECKPOINTS), b"{}\n").expect("write");
    std::fs::write(dir.path().join("segment-000003.jsonl.cut"), b"junk\n").expect("write");
    let (summary, events, _) = export(dir.path());
    assert_eq!(summary.segments, 2);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["unmapped"]["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 4]);
    assert_eq!(events[1]["unmapped"]["segment"], "segment-000002.jsonl");
    assert_eq!(events[1]["activity_name"], "Update");
}

#[test]
fn an_empty_log_exports_nothing_and_a_missing_one_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (summary, events, _) = export(dir.path());
    assert_eq!(summary, ExportSummary::default());
    assert!(events.is_empty());
    let mut out = Vec::new();
    let missing = export::export_ocsf(&dir.path().join("nope"), &mut out);
    assert!(matches!(missing, Err(export::ExportError::Read { .. })));
    assert!(out.is_empty());
}

#[test]
fn approval_required_is_delayed_not_allowed() {
    let mut line = Vec::new();
    let Value::Object(fields) = decision("POST", "approval-required", "r-4") else {
        panic!("an object")
    };
    record::write_line(
        &mut line,
        &Head {
            log: ORIGIN,
            seq: 9,
            epoch: 2,
            ts: at(9),
            prev: record::genesis(ORIGIN),
            kind: "request.decision",
        },
        &fields,
    );
    let record = Record::parse(&line[..line.len() - 1]).expect("a record");
    let event = export::to_ocsf(&record).expect("exported");
    assert_eq!(event["status_id"], 99);
    assert_eq!(event["disposition"], "Delayed");
    assert_eq!(event["action_id"], 0);
    assert_eq!(event["severity_id"], 1);
    assert!(
        event["unmapped"].get("segment").is_none(),
        "only export_ocsf knows the file"
    );
    let _: &Map<String, Value> = event.as_object().expect("an object");
}
