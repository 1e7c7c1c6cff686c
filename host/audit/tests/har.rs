//! Session recordings: chained HAR entries, redaction, blobs, recovery, tamper detection
//! (audit.md tamper case 19) and export as HAR 1.2.
#![allow(clippy::unwrap_used)]
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use portcullis_audit::har::{
    self, Entry, HarError, Recorder, RecorderOptions, Timings, genesis, redact_url,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const BEARER: &str = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LWJlYXJlcg.sig-bearer-777";
const SAS_SIG: &str = "sv2024SASsignatureQQQ";
const COOKIE: &str = "session=cookie-secret-555";
const API_KEY: &str = "sk-ant-api-key-999";
const TOKEN_HEADER: &str = "github-token-444";
const OAUTH_CODE: &str = "oauth-code-333";

fn entry(session: &str, n: u64) -> Entry {
    Entry {
        session: session.into(),
        started: UNIX_EPOCH + Duration::from_micros(1_780_000_000_000_000 + n),
        duration: Duration::from_micros(12_345),
        method: "GET".into(),
        url: format!("https://blob.example/c/file{n}.txt?sv=2024-05-04&sig={SAS_SIG}&n={n}"),
        request_headers: vec![
            ("Authorization".into(), format!("Bearer {BEARER}")),
            ("Accept".into(), "text/plain".into()),
        ],
        status: 200,
        status_text: "OK".into(),
        response_headers: vec![("Content-Type".into(), "text/plain".into())],
        response_body: Some(format!("hello {n}").into_bytes()),
        request_id: format!("req-{n}"),
        audit_seq: Some(100 + n),
        decision: "allow".into(),
        findings: json!({"masked": n}),
        trace_id: Some(format!("4bf92f3577b34da6a3ce929d0e0e{n:04}")),
        principal: Some("agent:builder".into()),
        ..Entry::default()
    }
}

fn file(dir: &Path, session: &str) -> PathBuf {
    dir.join(format!("{session}.harl"))
}

/// The stored lines, without their `\n`.
fn lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\n").unwrap_or(l).to_vec())
        .collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    std::fs::write(path, out).unwrap();
}

fn leaf(line: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(line);
    h.finalize().into()
}

/// A recorded session of `n` entries in a fresh directory.
fn recorded(session: &str, n: u64) -> (tempfile::TempDir, Vec<har::Recorded>) {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::open(dir.path(), RecorderOptions::default()).unwrap();
    let done = (0..n)
        .map(|i| recorder.record_blocking(entry(session, i)).unwrap())
        .collect();
    recorder.close().unwrap();
    (dir, done)
}

/// Poll a future to completion on this thread: no async runtime in this crate.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

fn assert_broken_at(dir: &Path, session: &str, seq: u64) {
    let (entries, broken) = har::verify_chain(dir, session).unwrap();
    assert_eq!((entries, broken), (seq, Some(seq)));
    match har::export(dir, session) {
        Err(HarError::Broken { seq: at, .. }) => assert_eq!(at, seq),
        other => panic!("export must refuse a broken chain, got {other:?}"),
    }
    let listed = har::list(dir).unwrap();
    assert_eq!(listed[0].broken, Some(seq));
}

#[test]
fn recorded_entries_export_as_har_1_2_with_their_custom_fields() {
    let (dir, recorded) = recorded("sess-1", 3);
    assert_eq!(
        recorded.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let har = har::export(dir.path(), "sess-1").unwrap();
    let log = &har["log"];
    assert_eq!(log["version"], "1.2");
    assert_eq!(log["creator"]["name"], "portcullis");
    assert_eq!(log["creator"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(log["pages"], json!([]));
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);

    let e = &entries[1];
    assert_eq!(e["startedDateTime"], "2026-05-28T20:26:40.000001Z");
    assert_eq!(e["time"], 12.345);
    assert_eq!(e["cache"], json!({}));
    assert_eq!(
        e["timings"],
        json!({"send": 0.0, "wait": 12.345, "receive": 0.0})
    );
    let request = &e["request"];
    assert_eq!(request["method"], "GET");
    assert_eq!(
        request["url"],
        "https://blob.example/c/file1.txt?sv=2024-05-04&sig=[REDACTED]&n=1"
    );
    assert_eq!(request["httpVersion"], "HTTP/1.1");
    assert_eq!(request["cookies"], json!([]));
    assert_eq!(
        request["headers"],
        json!([
            {"name": "Authorization", "value": "[REDACTED]"},
            {"name": "Accept", "value": "text/plain"},
        ])
    );
    assert_eq!(
        request["queryString"],
        json!([
            {"name": "sv", "value": "2024-05-04"},
            {"name": "sig", "value": "[REDACTED]"},
            {"name": "n", "value": "1"},
        ])
    );
    assert_eq!(request["headersSize"], -1);
    assert_eq!(request["bodySize"], 0);
    assert!(request.get("postData").is_none());
    let response = &e["response"];
    assert_eq!(response["status"], 200);
    assert_eq!(response["statusText"], "OK");
    assert_eq!(response["httpVersion"], "HTTP/1.1");
    assert_eq!(response["cookies"], json!([]));
    assert_eq!(
        response["content"],
        json!({"size": 7, "mimeType": "text/plain", "text": "hello 1"})
    );
    assert_eq!(response["redirectURL"], "");
    assert_eq!(response["headersSize"], -1);
    assert_eq!(response["bodySize"], 7);

    assert_eq!(e["_requestId"], "req-1");
    assert_eq!(e["_auditSeq"], 101);
    assert_eq!(e["_decision"], "allow");
    assert_eq!(e["_findings"], json!({"masked": 1}));
    assert_eq!(e["_traceId"], "4bf92f3577b34da6a3ce929d0e0e0001");
    assert_eq!(e["_principal"], "agent:builder");
    assert_eq!(e["_recordingSeq"], 1);
    assert_eq!(e["_entryHash"], BASE64.encode(recorded[1].hash));
}

#[test]
fn a_request_body_and_explicit_timings_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::open(dir.path(), RecorderOptions::default()).unwrap();
    let mut e = entry("post", 0);
    e.method = "POST".into();
    e.request_headers
        .push(("Content-Type".into(), "application/json".into()));
    e.request_body = Some(br#"{"q":"***"}"#.to_vec());
    e.response_body = Some(vec![0xff, 0x00, 0x80]);
    e.response_mime = "application/octet-stream".into();
    e.timings = Some(Timings {
        send: Duration::from_micros(1_000),
        wait: Duration::from_micros(10_000),
        receive: Duration::from_micros(1_345),
    });
    e.audit_seq = None;
    e.trace_id = None;
    recorder.record_blocking(e).unwrap();
    recorder.close().unwrap();
    let har = har::export(dir.path(), "post").unwrap();
    let e = &har["log"]["entries"][0];
    assert_eq!(
        e["request"]["postData"],
        json!({"mimeType": "application/json", "text": "{\"q\":\"***\"}"})
    );
    assert_eq!(e["request"]["bodySize"], 11);
    assert_eq!(
        e["response"]["content"],
        json!({"size": 3, "mimeType": "application/octet-stream", "text": "/wCA", "encoding": "base64"})
    );
    assert_eq!(
        e["timings"],
        json!({"send": 1.0, "wait": 10.0, "receive": 1.345})
    );
    assert!(e.get("_auditSeq").is_none());
    assert!(e.get("_traceId").is_none());
}

#[test]
fn credentials_in_headers_and_the_query_never_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::open(dir.path(), RecorderOptions::default()).unwrap();
    let mut e = entry("creds", 0);
    e.url = format!(
        "https://user:pw-888@api.example/v1?code={OAUTH_CODE}&SIG={SAS_SIG}2&Access_Token=at-111\
         &client_secret=cs-222&x-ms-signature=xs-666&%73ignature=enc-777&keep=yes#access_token=frag-999"
    );
    e.request_headers = vec![
        ("authorization".into(), format!("Bearer {BEARER}")),
        ("Proxy-Authorization".into(), "Basic proxy-secret-1".into()),
        ("Cookie".into(), COOKIE.into()),
        (
            "x-ms-copy-source-authorization".into(),
            "Bearer copy-2".into(),
        ),
        ("X-Api-Key".into(), API_KEY.into()),
        ("api-key".into(), "azure-openai-key-3".into()),
        ("x-functions-key".into(), "fn-key-4".into()),
        ("Ocp-Apim-Subscription-Key".into(), "apim-5".into()),
        ("X-GitHub-Token".into(), TOKEN_HEADER.into()),
        ("X-Client-Secret".into(), "client-6".into()),
        ("X-Amz-Signature".into(), "amz-7".into()),
        ("User-Agent".into(), "agent/1.0".into()),
    ];
    e.response_headers = vec![
        (
            "Set-Cookie".into(),
            "id=set-cookie-secret-8; HttpOnly".into(),
        ),
        (
            "Location".into(),
            format!("https://blob.example/next?sig={SAS_SIG}3&page=2"),
        ),
    ];
    e.status = 302;
    recorder.record_blocking(e).unwrap();
    recorder.close().unwrap();

    let raw = String::from_utf8(std::fs::read(file(dir.path(), "creds")).unwrap()).unwrap();
    for secret in [
        BEARER,
        "proxy-secret-1",
        COOKIE,
        "copy-2",
        API_KEY,
        "azure-openai-key-3",
        "fn-key-4",
        "apim-5",
        TOKEN_HEADER,
        "client-6",
        "amz-7",
        "set-cookie-secret-8",
        SAS_SIG,
        OAUTH_CODE,
        "pw-888",
        "at-111",
        "cs-222",
        "xs-666",
        "enc-777",
        "frag-999",
    ] {
        assert!(!raw.contains(secret), "{secret} is in the stored file");
    }
    assert!(raw.contains("agent/1.0") && raw.contains("keep=yes"));

    let har = har::export(dir.path(), "creds").unwrap();
    let e = &har["log"]["entries"][0];
    assert_eq!(
        e["request"]["url"],
        "https://[REDACTED]@api.example/v1?code=[REDACTED]&SIG=[REDACTED]&Access_Token=[REDACTED]\
         &client_secret=[REDACTED]&x-ms-signature=[REDACTED]&%73ignature=[REDACTED]&keep=yes"
    );
    let query = e["request"]["queryString"].as_array().unwrap();
    assert_eq!(query.len(), 7);
    assert!(
        query[..6].iter().all(|p| p["value"] == "[REDACTED]"),
        "{query:?}"
    );
    assert_eq!(query[5]["name"], "signature", "names are percent-decoded");
    assert_eq!(query[6], json!({"name": "keep", "value": "yes"}));
    assert_eq!(
        e["response"]["redirectURL"],
        "https://blob.example/next?sig=[REDACTED]&page=2"
    );
}

#[test]
fn redact_url_keeps_everything_but_credentials() {
    assert_eq!(
        redact_url("https://h/p?a=1&&b=%20x+y&token"),
        "https://h/p?a=1&&b=%20x+y&token"
    );
    assert_eq!(redact_url("/relative?Sig=abc"), "/relative?Sig=[REDACTED]");
    assert_eq!(redact_url("https://h/p#frag"), "https://h/p");
    // Nothing to redact: copied as is; userinfo without a query is still taken out.
    assert_eq!(redact_url("/c/b/blob.txt"), "/c/b/blob.txt");
    assert_eq!(redact_url("https://u:pw@h/p"), "https://[REDACTED]@h/p");
    assert_eq!(
        redact_url("/p/x://u@h?%53IG=1&a=%4A"),
        "/p/x://u@h?%53IG=[REDACTED]&a=%4A"
    );
    assert_eq!(
        redact_url("https://tok@h/p@q?x=1"),
        "https://[REDACTED]@h/p@q?x=1"
    );
    assert!(har::is_secret_header("X-Refresh-Token"));
    assert!(!har::is_secret_header("Content-Type"));
    assert!(har::is_secret_query_param("X-Amz-Security-Token"));
    assert!(!har::is_secret_query_param("page"));
}

#[test]
fn the_returned_hash_is_the_leaf_hash_of_the_stored_line() {
    let (dir, recorded) = recorded("hashes", 3);
    let stored = lines(&file(dir.path(), "hashes"));
    assert_eq!(stored.len(), 3);
    for (r, line) in recorded.iter().zip(&stored) {
        assert_eq!(r.session, "hashes");
        assert_eq!(r.hash, leaf(line));
    }
    let text = std::str::from_utf8(&stored[0]).unwrap();
    let prefix = format!(
        "{{\"v\":1,\"session\":\"hashes\",\"seq\":0,\"prev\":\"{}\",\"ts\":\"",
        BASE64.encode(genesis("hashes"))
    );
    assert!(text.starts_with(&prefix), "{text}");
    let second: Value = serde_json::from_slice(&stored[1]).unwrap();
    assert_eq!(second["prev"], BASE64.encode(recorded[0].hash));
    assert_eq!(
        genesis("hashes"),
        <[u8; 32]>::from(Sha256::digest(b"portcullis-har-v1 genesis\nhashes"))
    );
    assert_eq!(
        har::entry_hashes(dir.path(), "hashes").unwrap(),
        recorded.iter().map(|r| r.hash).collect::<Vec<_>>()
    );
}

#[test]
fn a_large_body_becomes_a_blob_and_is_inlined_on_export() {
    let dir = tempfile::tempdir().unwrap();
    let options = RecorderOptions {
        blob_threshold: 1024,
        ..RecorderOptions::default()
    };
    let recorder = Recorder::open(dir.path(), options).unwrap();
    let text_body = "masked line of text\n".repeat(200);
    let binary_body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8 | 0x80).collect();
    let mut e = entry("blobs", 0);
    e.method = "PUT".into();
    e.request_body = Some(binary_body.clone());
    e.request_mime = "application/octet-stream".into();
    e.response_body = Some(text_body.clone().into_bytes());
    recorder.record_blocking(e.clone()).unwrap();
    e.started += Duration::from_secs(1);
    recorder.record_blocking(e).unwrap();
    recorder.close().unwrap();

    let text_hash = hex::encode(Sha256::digest(text_body.as_bytes()));
    let binary_hash = hex::encode(Sha256::digest(&binary_body));
    let blobs = dir.path().join("blobs");
    assert_eq!(
        std::fs::read(blobs.join(&text_hash)).unwrap(),
        text_body.as_bytes()
    );
    assert_eq!(
        std::fs::read(blobs.join(&binary_hash)).unwrap(),
        binary_body
    );
    assert_eq!(
        std::fs::read_dir(&blobs).unwrap().count(),
        2,
        "written once each"
    );

    let raw = std::fs::read_to_string(file(dir.path(), "blobs")).unwrap();
    assert!(!raw.contains("masked line of text"));
    let stored: Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert_eq!(
        stored["entry"]["response"]["content"],
        json!({"size": 4000, "mimeType": "text/plain", "_blob": text_hash})
    );
    assert_eq!(
        stored["entry"]["request"]["postData"],
        json!({"mimeType": "application/octet-stream", "_blob": binary_hash})
    );

    let har = har::export(dir.path(), "blobs").unwrap();
    for e in har["log"]["entries"].as_array().unwrap() {
        assert_eq!(e["response"]["content"]["text"], text_body);
        assert!(e["response"]["content"].get("encoding").is_none());
        let post = &e["request"]["postData"];
        assert_eq!(post["encoding"], "base64");
        assert_eq!(
            BASE64.decode(post["text"].as_str().unwrap()).unwrap(),
            binary_body
        );
    }
    assert_eq!(har::verify_chain(dir.path(), "blobs").unwrap(), (2, None));
}

#[test]
fn a_body_over_the_hard_cap_keeps_only_its_size_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let options = RecorderOptions {
        blob_threshold: 100,
        max_body: 1000,
        ..RecorderOptions::default()
    };
    let recorder = Recorder::open(dir.path(), options).unwrap();
    let body = vec![b'z'; 1001];
    let mut e = entry("capped", 0);
    e.response_body = Some(body.clone());
    recorder.record_blocking(e).unwrap();
    recorder.close().unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
        0
    );
    let har = har::export(dir.path(), "capped").unwrap();
    let content = &har["log"]["entries"][0]["response"]["content"];
    assert_eq!(
        *content,
        json!({
            "size": 1001,
            "mimeType": "text/plain",
            "_sha256": hex::encode(Sha256::digest(&body)),
            "_truncated": true,
        })
    );
    assert_eq!(har["log"]["entries"][0]["response"]["bodySize"], 1001);
}

#[test]
fn an_altered_or_missing_blob_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let options = RecorderOptions {
        blob_threshold: 10,
        ..RecorderOptions::default()
    };
    let recorder = Recorder::open(dir.path(), options).unwrap();
    recorder.record_blocking(entry("b", 0)).unwrap();
    let mut big = entry("b", 1);
    big.response_body = Some(b"a body longer than ten bytes".to_vec());
    recorder.record_blocking(big).unwrap();
    recorder.close().unwrap();
    let blob = dir
        .path()
        .join("blobs")
        .join(hex::encode(Sha256::digest(b"a body longer than ten bytes")));
    std::fs::write(&blob, b"a body longer than ten bytez").unwrap();
    assert_eq!(har::verify_chain(dir.path(), "b").unwrap(), (1, Some(1)));
    assert!(matches!(
        har::export(dir.path(), "b"),
        Err(HarError::Blob { seq: 1, .. })
    ));
    std::fs::remove_file(&blob).unwrap();
    assert!(matches!(
        har::export(dir.path(), "b"),
        Err(HarError::Blob { seq: 1, .. })
    ));
}

#[test]
fn a_torn_last_line_is_recovered_on_reopen_and_the_chain_continues() {
    let (dir, _) = recorded("torn", 3);
    let path = file(dir.path(), "torn");
    let whole = std::fs::read(&path).unwrap();
    let good_len = whole.len();
    // A crash in the middle of writing a fourth line.
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[..40]);
    std::fs::write(&path, &torn).unwrap();
    assert_broken_at(dir.path(), "torn", 3);

    let recorder = Recorder::open(dir.path(), RecorderOptions::default()).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        whole,
        "recovery at open cuts the torn line"
    );
    let quarantined: Vec<_> = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(quarantined.len(), 1);
    let name = quarantined[0].file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("torn.harl.") && name.ends_with(".cut"),
        "{name}"
    );
    assert_eq!(std::fs::read(&quarantined[0]).unwrap(), &whole[..40]);

    let next = recorder.record_blocking(entry("torn", 3)).unwrap();
    assert_eq!(next.seq, 3);
    recorder.close().unwrap();
    let stored = lines(&path);
    assert_eq!(stored.len(), 4);
    assert_eq!(next.hash, leaf(&stored[3]));
    assert!(std::fs::metadata(&path).unwrap().len() > good_len as u64);
    assert_eq!(har::verify_chain(dir.path(), "torn").unwrap(), (4, None));
    assert_eq!(
        har::export(dir.path(), "torn").unwrap()["log"]["entries"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

#[test]
fn a_mis_chained_line_is_cut_when_the_session_is_written_again() {
    let (dir, _) = recorded("cut", 4);
    let path = file(dir.path(), "cut");
    let mut stored = lines(&path);
    stored.remove(1);
    write_lines(&path, &stored);
    let recorder = Recorder::open(dir.path(), RecorderOptions::default()).unwrap();
    let next = recorder.record_blocking(entry("cut", 9)).unwrap();
    assert_eq!(next.seq, 1, "the chain continues from the last good line");
    recorder.close().unwrap();
    assert_eq!(har::verify_chain(dir.path(), "cut").unwrap(), (2, None));
    let quarantined = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let cut = std::fs::read(quarantined).unwrap();
    assert_eq!(cut.iter().filter(|&&b| b == b'\n').count(), 2);
}

#[test]
fn an_edited_entry_is_detected_and_export_refuses() {
    let (dir, _) = recorded("edit", 4);
    let path = file(dir.path(), "edit");
    let mut stored = lines(&path);
    let edited = String::from_utf8(stored[1].clone())
        .unwrap()
        .replace("\"allow\"", "\"deny\"");
    assert_ne!(edited.as_bytes(), stored[1]);
    stored[1] = edited.into_bytes();
    write_lines(&path, &stored);
    // Line 1 still parses; line 2 no longer chains to it.
    assert_broken_at(dir.path(), "edit", 2);

    let (dir, _) = recorded("edit", 3);
    let path = file(dir.path(), "edit");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.iter().position(|&b| b == b'{').unwrap() + 1;
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    assert_broken_at(dir.path(), "edit", 0);
}

#[test]
fn a_dropped_entry_is_detected() {
    let (dir, _) = recorded("drop", 4);
    let path = file(dir.path(), "drop");
    let mut stored = lines(&path);
    stored.remove(2);
    write_lines(&path, &stored);
    assert_broken_at(dir.path(), "drop", 2);
}

#[test]
fn swapped_entries_are_detected() {
    let (dir, _) = recorded("swap", 4);
    let path = file(dir.path(), "swap");
    let mut stored = lines(&path);
    stored.swap(1, 2);
    write_lines(&path, &stored);
    assert_broken_at(dir.path(), "swap", 1);
}

#[test]
fn a_truncated_entry_is_detected() {
    let (dir, _) = recorded("trunc", 3);
    let path = file(dir.path(), "trunc");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 30]).unwrap();
    assert_broken_at(dir.path(), "trunc", 2);

    // Cut inside a line but with its newline kept: unparsable.
    let (dir, _) = recorded("trunc", 3);
    let path = file(dir.path(), "trunc");
    let mut stored = lines(&path);
    let half = stored[1].len() / 2;
    stored[1].truncate(half);
    write_lines(&path, &stored);
    assert_broken_at(dir.path(), "trunc", 1);
}

#[test]
fn a_dropped_tail_shows_only_against_the_hashes_in_the_audit_log() {
    let (dir, recorded) = recorded("tail", 4);
    let path = file(dir.path(), "tail");
    let mut stored = lines(&path);
    stored.truncate(2);
    write_lines(&path, &stored);
    // The chain alone cannot see it…
    assert_eq!(har::verify_chain(dir.path(), "tail").unwrap(), (2, None));
    // …the audit completion records can: they hold every entry's hash.
    let held: Vec<_> = recorded.iter().map(|r| r.hash).collect();
    let present = har::entry_hashes(dir.path(), "tail").unwrap();
    assert_eq!(present, held[..2]);
    assert!(!present.contains(&held[3]));
}

#[test]
fn a_line_from_another_session_is_refused() {
    let (dir, _) = recorded("one", 2);
    let (other, _) = recorded("two", 2);
    std::fs::copy(file(dir.path(), "one"), file(other.path(), "two")).unwrap();
    assert_eq!(
        har::verify_chain(other.path(), "two").unwrap(),
        (0, Some(0))
    );
}

#[test]
fn bad_session_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = dir.path().join("sessions");
    let recorder = Recorder::open(&sessions, RecorderOptions::default()).unwrap();
    let long = "a".repeat(129);
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "../escape",
        "a/b",
        "a\\b",
        "/etc/passwd",
        "a b",
        "é",
        "nul\0byte",
        "semi;colon",
        long.as_str(),
    ] {
        assert!(
            matches!(
                recorder.record_blocking(entry(bad, 0)),
                Err(HarError::InvalidSession(_))
            ),
            "{bad:?}"
        );
        assert!(matches!(
            block_on(recorder.record(entry(bad, 0))),
            Err(HarError::InvalidSession(_))
        ));
        assert!(matches!(
            har::export(&sessions, bad),
            Err(HarError::InvalidSession(_))
        ));
        assert!(matches!(
            har::verify_chain(&sessions, bad),
            Err(HarError::InvalidSession(_))
        ));
    }
    for good in [
        "a",
        "A-z_0.9",
        "9f1c2a7e-5b0d-4c52-9a3e-1f2b3c4d5e6f",
        &"b".repeat(128),
    ] {
        recorder.record_blocking(entry(good, 0)).unwrap();
    }
    recorder.close().unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing escaped"
    );
    assert_eq!(har::list(&sessions).unwrap().len(), 4);
    assert!(matches!(
        har::export(&sessions, "missing"),
        Err(HarError::NotFound(_))
    ));
}

#[test]
fn async_record_resolves_once_the_line_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::open(dir.path(), RecorderOptions::default()).unwrap();
    let first = block_on(recorder.record(entry("async", 0))).unwrap();
    let second = block_on(recorder.record(entry("async", 1))).unwrap();
    assert_eq!((first.seq, second.seq), (0, 1));
    let stored = lines(&file(dir.path(), "async"));
    assert_eq!(stored.len(), 2, "on disk before the reply");
    assert_eq!(second.hash, leaf(&stored[1]));
    recorder.close().unwrap();
}

#[test]
fn concurrent_writers_over_many_sessions_keep_every_chain() {
    let dir = tempfile::tempdir().unwrap();
    let options = RecorderOptions {
        max_open_files: 3,
        queue: 8,
        ..RecorderOptions::default()
    };
    let recorder = Arc::new(Recorder::open(dir.path(), options).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let recorder = Arc::clone(&recorder);
            std::thread::spawn(move || {
                (0..25u64)
                    .map(|i| {
                        let session = format!("s{}", (t + i) % 10);
                        recorder.record_blocking(entry(&session, i)).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    recorder.close().unwrap();
    assert_eq!(all.len(), 200);
    all.sort_by(|a, b| (&a.session, a.seq).cmp(&(&b.session, b.seq)));
    let summaries = har::list(dir.path()).unwrap();
    assert_eq!(summaries.len(), 10);
    for summary in &summaries {
        assert_eq!(summary.broken, None, "{summary:?}");
        let held: Vec<_> = all
            .iter()
            .filter(|r| r.session == summary.id)
            .map(|r| r.hash)
            .collect();
        assert_eq!(summary.entries, held.len() as u64);
        assert_eq!(har::entry_hashes(dir.path(), &summary.id).unwrap(), held);
        assert_eq!(
            har::verify_chain(dir.path(), &summary.id).unwrap(),
            (held.len() as u64, None)
        );
    }
}

#[test]
fn list_summarises_every_session() {
    let (dir, _) = recorded("listed", 3);
    std::fs::write(dir.path().join("not-a-session.txt"), b"x").unwrap();
    let listed = har::list(dir.path()).unwrap();
    assert_eq!(listed.len(), 1);
    let s = &listed[0];
    assert_eq!(s.id, "listed");
    assert_eq!(s.entries, 3);
    assert_eq!(
        s.bytes,
        std::fs::metadata(file(dir.path(), "listed")).unwrap().len()
    );
    assert!(s.first_ts.is_some() && s.first_ts <= s.last_ts);
    assert_eq!((s.broken, s.problem.clone()), (None, None));
}

#[test]
fn a_reopened_session_continues_its_chain_and_a_closed_recorder_refuses() {
    let (dir, first) = recorded("again", 2);
    let recorder = Recorder::open(dir.path(), RecorderOptions::default()).unwrap();
    let next = recorder.record_blocking(entry("again", 2)).unwrap();
    assert_eq!(next.seq, 2);
    let stored = lines(&file(dir.path(), "again"));
    let line: Value = serde_json::from_slice(&stored[2]).unwrap();
    assert_eq!(line["prev"], BASE64.encode(first[1].hash));
    recorder.close().unwrap();
    recorder.close().unwrap();
    assert!(matches!(
        recorder.record_blocking(entry("again", 3)),
        Err(HarError::Closed)
    ));
    assert!(matches!(
        block_on(recorder.record(entry("again", 3))),
        Err(HarError::Closed)
    ));
}

#[test]
fn one_recorder_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::open(dir.path(), RecorderOptions::default()).unwrap();
    assert!(matches!(
        Recorder::open(dir.path(), RecorderOptions::default()),
        Err(HarError::Locked(_))
    ));
    drop(recorder);
    Recorder::open(dir.path(), RecorderOptions::default()).unwrap();
}
