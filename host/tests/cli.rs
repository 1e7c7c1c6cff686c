//! The auditor's commands as a user runs them: `portcullis keygen`, `audit verify` (each exit
//! code, text and JSON), `audit export --format ocsf`, `sessions list` and `sessions export --har`.
#![allow(clippy::unwrap_used)]
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use portcullis_audit::har::{Entry, Recorder, RecorderOptions};
use portcullis_audit::note::SigningKey;
use portcullis_audit::writer::{AuditLog, Options, Wait};
use serde_json::{Map, Value, json};

const ORIGIN: &str = "cli.test/audit";

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `keygen` into `dir/audit`, then a small log written with that key, closed with a stop.
fn log_with_key(dir: &Path) {
    let out = portcullis(&[
        "keygen",
        "--name",
        ORIGIN,
        "--out",
        dir.join("audit").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let key = SigningKey::read(&dir.join("audit.key"), ORIGIN).unwrap();
    let (log, _) = AuditLog::open(Options::new(dir.join("log"), ORIGIN.into(), key)).unwrap();
    for i in 0..5 {
        let mut fields = Map::new();
        fields.insert("i".into(), json!(i));
        log.append_blocking("test.event", fields, Wait::Synced)
            .unwrap();
    }
    log.append_blocking("gateway.stop", Map::new(), Wait::Synced)
        .unwrap();
    log.close().unwrap();
}

fn verify(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "audit",
        "verify",
        "--dir",
        dir.join("log").to_str().unwrap().to_owned().leak(),
        "--trust",
        dir.join("audit.pub").to_str().unwrap().to_owned().leak(),
    ];
    args.extend_from_slice(extra);
    portcullis(&args)
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out_prefix = dir.path().join("k");
    let args = [
        "keygen",
        "--name",
        ORIGIN,
        "--out",
        out_prefix.to_str().unwrap(),
    ];
    let out = portcullis(&args);
    assert!(out.status.success(), "{}", text(&out));
    let mode = std::fs::metadata(dir.path().join("k.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let public = std::fs::read_to_string(dir.path().join("k.pub")).unwrap();
    assert!(public.starts_with(&format!("{ORIGIN}+")), "{public}");
    assert!(
        text(&out).contains(public.trim()),
        "prints the verifier key"
    );
    let again = portcullis(&args);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("k.pub")).unwrap(),
        public
    );
}

#[test]
fn keygen_makes_a_missing_directory_only_its_owner_opens() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out_prefix = dir.path().join("etc/portcullis/audit");
    let out = portcullis(&[
        "keygen",
        "--name",
        ORIGIN,
        "--out",
        out_prefix.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    for made in ["etc", "etc/portcullis"] {
        let mode = std::fs::metadata(dir.path().join(made))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{made}");
    }
    assert!(dir.path().join("etc/portcullis/audit.key").is_file());
    assert!(dir.path().join("etc/portcullis/audit.pub").is_file());
}

#[test]
fn verify_exits_0_on_a_good_log_1_on_an_edited_one_and_3_without_a_trust_file() {
    let dir = tempfile::tempdir().unwrap();
    log_with_key(dir.path());
    let out = verify(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("result:      PASS"), "{}", text(&out));

    let json_out = verify(dir.path(), &["--format", "json"]);
    let report: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(
        report["records"], 7,
        "segment.open, five events, the stop: {report}"
    );

    let missing = portcullis(&[
        "audit",
        "verify",
        "--dir",
        dir.path().join("log").to_str().unwrap(),
        "--trust",
        dir.path().join("nope.pub").to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(3), "{}", text(&missing));

    let segment = dir.path().join("log/segment-000001.jsonl");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.windows(4).position(|w| w == b"\"i\":").unwrap() + 4;
    bytes[at] = b'7';
    std::fs::write(&segment, bytes).unwrap();
    let out = verify(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("chain-broken"), "{}", text(&out));
}

#[test]
fn verify_exits_2_under_strict_when_only_warnings_remain() {
    let dir = tempfile::tempdir().unwrap();
    log_with_key(dir.path());
    // A torn last line (a crash mid-write) is a warning, not a failure.
    let segment = dir.path().join("log/segment-000001.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    std::io::Write::write_all(&mut file, b"{\"v\":1,\"log\":").unwrap();
    assert_eq!(verify(dir.path(), &[]).status.code(), Some(0));
    let strict = verify(dir.path(), &["--strict"]);
    assert_eq!(strict.status.code(), Some(2), "{}", text(&strict));
}

#[test]
fn export_writes_ocsf_events_that_point_back_to_their_records() {
    let dir = tempfile::tempdir().unwrap();
    log_with_key(dir.path());
    let out = portcullis(&[
        "audit",
        "export",
        "--dir",
        dir.path().join("log").to_str().unwrap(),
        "--format",
        "ocsf",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 6, "{events:?}");
    for event in &events {
        assert_eq!(event["class_uid"], 6003);
        assert!(event["unmapped"]["seq"].is_u64(), "{event}");
        assert!(event["unmapped"]["leaf"].is_string(), "{event}");
    }
}

#[test]
fn sessions_list_and_export_give_a_har_1_2_file() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::open(dir.path(), RecorderOptions::default()).unwrap();
    recorder
        .record_blocking(Entry {
            session: "20261129-agent-7".into(),
            started: SystemTime::now(),
            duration: Duration::from_millis(3),
            url: "https://gw.example/c/b?comp=list&sig=SECRETSIG".into(),
            status: 200,
            response_body: Some(b"{\"ok\":true}".to_vec()),
            response_mime: "application/json".into(),
            request_id: "r-1".into(),
            ..Entry::default()
        })
        .unwrap();
    recorder.close().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let list = portcullis(&["sessions", "list", "--dir", dir_arg]);
    assert!(list.status.success(), "{}", text(&list));
    assert!(text(&list).contains("20261129-agent-7"), "{}", text(&list));
    let out = dir.path().join("out.har");
    let export = portcullis(&[
        "sessions",
        "export",
        "--dir",
        dir_arg,
        "20261129-agent-7",
        "--har",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(export.status.success(), "{}", text(&export));
    let har: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(har["log"]["version"], "1.2");
    assert_eq!(har["log"]["entries"][0]["_requestId"], "r-1");
    assert!(!std::fs::read_to_string(&out).unwrap().contains("SECRETSIG"));
    let unknown = portcullis(&["sessions", "export", "--dir", dir_arg, "nope", "--har"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
}
