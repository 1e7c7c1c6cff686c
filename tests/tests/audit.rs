//! The audit log and the session recordings end to end: a real gateway (TLS, a local OIDC
//! provider, a mock upstream) writes each request's decision before the upstream sees it and
//! its completion after the response, records denies, authentication failures, reloads and
//! restarts, refuses to forward when the log cannot be written, never stores a token or a SAS
//! signature, and leaves a log that `portcullis audit verify` passes and a recording bound to it.
#![allow(clippy::unwrap_used)]
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_audit::note::SigningKey;
use portcullis_audit::record::{self, Record};
use portcullis_audit::{har, merkle, verify};
use portcullis_tests::audit_records as records;
use portcullis_tests::gateway::{Answer, TestGateway, config_file_text};
use portcullis_tests::mock_upstream::{MockUpstream, Reply};
use portcullis_tests::oidc::{Idp, SigningKey as IdpKey, provider_toml};
use portcullis_tests::tls::Certs;
use serde_json::json;
use sha2::Digest;

const AUD: &str = "api://portcullis";
const ORIGIN: &str = "test.portcullis/audit-e2e";
const SAS_SIG: &str = "c2VjcmV0LXNhcy1zaWduYXR1cmU";

struct Env {
    idp: Idp,
    upstream: MockUpstream,
    gw: TestGateway,
    /// The request ids the upstream saw, each with whether its decision record was on disk.
    decided_first: Arc<Mutex<Vec<(String, bool)>>>,
    _idp_dir: tempfile::TempDir,
}

/// `[audit]` (with `on_failure` and `durability`) and `[sessions]` in the gateway's directory.
fn audit_toml(on_failure: &str, durability: &str) -> String {
    format!(
        r#"
[audit]
dir = "audit"
origin = "{ORIGIN}"
signing_key_file = "audit.key"
on_failure = "{on_failure}"
durability = "{durability}"

[sessions]
dir = "sessions"
"#
    )
}

/// Write the audit signing key into `dir`; its verifier key text.
fn write_key(dir: &Path) -> String {
    let key = SigningKey::generate(ORIGIN).unwrap();
    key.write(&dir.join("audit.key"), &dir.join("audit.pub"))
        .unwrap();
    key.verifier().to_string()
}

/// Whether the audit log in `dir` holds the decision record of `request_id`.
fn decision_on_disk(dir: &Path, request_id: &str) -> bool {
    records(dir).iter().any(|r| {
        r.kind == "request.decision" && r.fields["request_id"].as_str() == Some(request_id)
    })
}

async fn env(on_failure: &str) -> Env {
    env_with(on_failure, "batched").await
}

async fn env_with(on_failure: &str, durability: &str) -> Env {
    let idp_dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(idp_dir.path());
    let idp = Idp::start(&certs, IdpKey::rsa("k1")).await;
    let audit_dir: Arc<Mutex<Option<PathBuf>>> = Arc::default();
    let decided_first: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let (seen_dir, seen) = (audit_dir.clone(), decided_first.clone());
    let upstream = MockUpstream::start(move |request| {
        // At the moment the upstream is reached, the decision must already be in the log.
        let id = request.headers["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let dir = seen_dir.lock().unwrap().clone().unwrap();
        let on_disk = decision_on_disk(&dir, &id);
        seen.lock().unwrap().push((id, on_disk));
        let mut reply = Reply::json(r#"{"owner":"someone@example.com","ok":true}"#);
        reply
            .headers
            .push(("x-ms-request-id".into(), "upstream-req-42".into()));
        reply
    })
    .await;
    let config = format!(
        r#"
{provider}
{audit}
[[plugin]]
name = "plugin-template"
file = "plugin-template.wasm"
[plugin.config]
blocked_methods = ["DELETE"]
paths = ["/admin/**"]

[[plugin]]
name = "mask"
file = "mask.wasm"

[[route]]
name = "api"
upstream = "{upstream}"
plugins = ["plugin-template", "mask"]
[[route.access]]
name = "agents"
roles = ["agent"]
"#,
        provider = provider_toml("agents", &idp.issuer(), AUD, ""),
        audit = audit_toml(on_failure, durability),
        upstream = upstream.url(),
    );
    let ca = certs.ca.clone();
    let gw = TestGateway::start(&config, |dir| {
        std::fs::copy(&ca, dir.join("idp-ca.pem")).unwrap();
        write_key(dir);
    })
    .await;
    *audit_dir.lock().unwrap() = Some(gw.dir.path().join("audit"));
    Env {
        idp,
        upstream,
        gw,
        decided_first,
        _idp_dir: idp_dir,
    }
}

fn agent_token(idp: &Idp) -> String {
    let mut claims = idp.claims(AUD, "agent-7");
    claims["roles"] = json!(["agent"]);
    idp.mint(&claims)
}

async fn call(env: &Env, method: &str, path: &str, token: Option<&str>) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    env.gw
        .client(false)
        .send(method, path, &headers, bytes::Bytes::new())
        .await
}

fn request_id(answer: &Answer) -> String {
    answer.headers["x-request-id"].to_str().unwrap().to_string()
}

/// The completion record of `request_id`, once it is on disk.
async fn completion(dir: &Path, request_id: &str) -> Record {
    for _ in 0..200 {
        if let Some(r) = records(dir).into_iter().find(|r| {
            r.kind == "request.completion" && r.fields["request_id"].as_str() == Some(request_id)
        }) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no completion record for {request_id}");
}

/// Everything under `dir`, as text, for leak checks.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.push_str(&all_text(&path));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn verify_log(dir: &Path, pub_file: &Path) -> verify::Report {
    let trusted =
        portcullis_audit::note::parse_trust(&std::fs::read_to_string(pub_file).unwrap()).unwrap();
    verify::verify(verify::Options::new(dir, trusted)).unwrap()
}

#[tokio::test]
async fn a_request_is_decided_on_disk_before_the_upstream_sees_it_and_completed_after() {
    let env = env("deny").await;
    let token = agent_token(&env.idp);
    let path = format!("/items?comp=list&sig={SAS_SIG}&sv=2024");
    let answer = call(&env, "GET", &path, Some(&token)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.text().contains("[EMAIL]"), "{}", answer.text());
    let id = request_id(&answer);
    let decided = env.decided_first.lock().unwrap().clone();
    assert_eq!(
        decided,
        [(id.clone(), true)],
        "the decision was on disk first"
    );

    let dir = env.gw.dir.path().join("audit");
    let done = completion(&dir, &id).await;
    let decision = records(&dir)
        .into_iter()
        .find(|r| r.kind == "request.decision" && r.fields["request_id"] == id.as_str())
        .unwrap();
    assert_eq!(done.fields["decision_seq"], decision.seq);
    assert!(decision.seq < done.seq);
    assert_eq!(decision.fields["decision"], "allow");
    assert_eq!(decision.fields["principal"]["sub"], "agent-7");
    assert_eq!(
        decision.fields["principal"]["iss"],
        env.idp.issuer().as_str()
    );
    assert_eq!(decision.fields["operation"], "GET /items");
    let plugins: Vec<(&str, &str, &str)> = decision.fields["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let text = |key: &str| p[key].as_str().unwrap();
            (text("name"), text("hook"), text("verdict"))
        })
        .collect();
    // Hooks by their names in the contract.
    assert!(
        plugins.contains(&("plugin-template", "on-request", "allow")),
        "{plugins:?}"
    );
    assert!(
        decision.fields["target"]
            .as_str()
            .unwrap()
            .ends_with("/items?comp=list&sig=[REDACTED]&sv=2024"),
        "{}",
        decision.fields["target"]
    );
    assert_eq!(done.fields["status"], 200);
    assert_eq!(done.fields["outcome"], "ok");
    assert_eq!(done.fields["upstream"]["request_id"], "upstream-req-42");
    assert_eq!(
        done.fields["findings"],
        json!([{"kind": "email", "location": "/owner", "count": 1}])
    );
    assert_eq!(
        done.fields["bodies"]["response_sha256"],
        hex::encode(sha2::Sha256::digest(&answer.body)),
        "the hash of exactly what the client received"
    );

    // The recording: the masked body as the client saw it, bound to the completion record.
    let binding = &done.fields["recording"];
    let session = binding["session"].as_str().unwrap();
    let sessions = env.gw.dir.path().join("sessions");
    let hashes = har::entry_hashes(&sessions, session).unwrap();
    let seq = binding["seq"].as_u64().unwrap() as usize;
    assert_eq!(
        record::encode_hash(&hashes[seq]),
        binding["hash"].as_str().unwrap()
    );
    let exported = har::export(&sessions, session).unwrap();
    assert_eq!(exported["log"]["version"], "1.2");
    let entry = &exported["log"]["entries"][seq];
    assert_eq!(
        entry["response"]["content"]["text"].as_str().unwrap(),
        answer.text()
    );
    assert_eq!(entry["_requestId"], id.as_str());

    // No token, no SAS signature, anywhere in the evidence.
    let evidence = all_text(&dir) + &all_text(&sessions);
    for secret in token.split('.').skip(1).chain([SAS_SIG]) {
        assert!(!evidence.contains(secret), "a secret reached the evidence");
    }
    assert!(!evidence.to_ascii_lowercase().contains("bearer "));

    let pub_file = env.gw.dir.path().join("audit.pub");
    let dir_owned = dir.clone();
    env.gw.running.shutdown().await;
    let all = records(&dir_owned);
    assert_eq!(all.last().unwrap().kind, "gateway.stop");
    assert_eq!(all[1].kind, "gateway.start");
    let loaded = all.iter().find(|r| r.kind == "config.loaded").unwrap();
    let digests: Vec<&str> = loaded.fields["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sha256"].as_str().unwrap())
        .collect();
    let template = std::fs::read(portcullis_tests::plugin("plugin-template")).unwrap();
    assert!(digests.contains(&hex::encode(sha2::Sha256::digest(&template)).as_str()));
    let report = verify_log(&dir_owned, &pub_file);
    assert!(report.passed(), "{}", report.render_text());
    assert_eq!(report.exit_code(true), 0, "{}", report.render_text());
}

#[tokio::test]
async fn denies_and_authentication_failures_are_recorded_and_never_forwarded() {
    let env = env("deny").await;
    let token = agent_token(&env.idp);
    let denied = call(&env, "DELETE", "/admin/users/7", Some(&token)).await;
    assert_eq!(denied.status, 403);
    let anonymous = call(&env, "GET", "/items", None).await;
    assert_eq!(anonymous.status, 401);
    let forged = call(&env, "GET", "/items", Some("eyJhbGciOiJub25lIn0.e30.")).await;
    assert_eq!(forged.status, 401);
    assert!(env.upstream.seen().is_empty(), "nothing was forwarded");

    let dir = env.gw.dir.path().join("audit");
    let deny_id = request_id(&denied);
    completion(&dir, &deny_id).await;
    let all = records(&dir);
    let deny = all
        .iter()
        .find(|r| r.kind == "request.decision" && r.fields["request_id"] == deny_id.as_str())
        .unwrap();
    assert_eq!(deny.fields["decision"], "deny");
    assert_eq!(deny.fields["by"], "plugin-template");
    assert_eq!(deny.fields["code"], "template-blocked-method");
    for answer in [&anonymous, &forged] {
        let id = request_id(answer);
        completion(&dir, &id).await;
        let failed = records(&dir)
            .into_iter()
            .find(|r| r.kind == "auth.failed" && r.fields["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no auth.failed record for {id}"));
        assert_eq!(failed.fields["decision"], "deny");
        assert!(failed.fields["code"].is_string());
        assert!(
            failed.fields["source"]["addr"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
    }
}

#[tokio::test]
async fn injected_write_and_fsync_failures_refuse_requests_with_503_and_forward_nothing() {
    for durability in ["strict", "batched"] {
        let env = env_with("deny", durability).await;
        let token = agent_token(&env.idp);
        let audit = env.gw.running.live().gateway().audit.clone().unwrap();
        for (fault, name) in [
            (&audit.faults.write, "write"),
            (&audit.faults.sync, "fsync"),
        ] {
            fault.store(true, Ordering::SeqCst);
            let forwarded = env.upstream.seen().len();
            if durability == "batched" && name == "fsync" {
                // Batched records are acknowledged once written; the failed fsync shows within
                // the fsync interval, and from then on requests are refused.
                for _ in 0..200 {
                    if audit.failing() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let _ = call(&env, "GET", "/items", Some(&token)).await;
                }
                assert!(audit.failing(), "a failed fsync marks the log failing");
            }
            let forwarded_before = env.upstream.seen().len().max(forwarded);
            let refused = call(&env, "GET", "/items", Some(&token)).await;
            assert_eq!(
                refused.status,
                503,
                "{durability} {name}: {}",
                refused.text()
            );
            assert_eq!(refused.json()["error"]["code"], "AuditUnavailable");
            assert_eq!(
                env.upstream.seen().len(),
                forwarded_before,
                "{durability} {name}: forwarded without a record"
            );
            fault.store(false, Ordering::SeqCst);
        }
        let served = call(&env, "GET", "/items", Some(&token)).await;
        assert_eq!(served.status, 200, "the log recovers once writes succeed");
        assert!(!audit.failing());
    }
}

#[tokio::test]
async fn allow_and_alert_forwards_when_the_log_cannot_be_written() {
    portcullis_tests::logs::capture();
    let env = env("allow-and-alert").await;
    let token = agent_token(&env.idp);
    let audit = env.gw.running.live().gateway().audit.clone().unwrap();
    audit.faults.write.store(true, Ordering::SeqCst);
    let answer = call(&env, "GET", "/items", Some(&token)).await;
    audit.faults.write.store(false, Ordering::SeqCst);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(env.upstream.seen().len(), 1);
    let id = request_id(&answer);
    let logs = portcullis_tests::logs::text();
    assert!(
        logs.lines().any(|l| l.contains("ALERT") && l.contains(&id)),
        "an alert names the request:\n{logs}"
    );
}

#[tokio::test]
async fn a_restart_continues_the_log_in_a_new_epoch_and_it_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path());
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let config = format!(
        r#"
{audit}
[[route]]
name = "open"
upstream = "{upstream}"
authentication = "none"
"#,
        audit = audit_toml("deny", "batched"),
        upstream = upstream.url(),
    );
    for epoch in 1..=2u64 {
        let key = dir.path().join("audit.key");
        let gw = TestGateway::start(&config, |d| {
            // A copy keeps the key's mode (0600).
            std::fs::copy(&key, d.join("audit.key")).unwrap();
            // The log lives outside the per-start directory, so both starts share it.
            std::os::unix::fs::symlink(dir.path().join("audit"), d.join("audit")).unwrap();
            std::fs::create_dir_all(dir.path().join("audit")).unwrap();
        })
        .await;
        let answer = gw.client(true).get("/x").await;
        assert_eq!(answer.status, 200);
        completion(&dir.path().join("audit"), &request_id(&answer)).await;
        gw.running.shutdown().await;
        let all = records(&dir.path().join("audit"));
        assert_eq!(all.last().unwrap().epoch, epoch);
    }
    let all = records(&dir.path().join("audit"));
    assert_eq!(all.iter().filter(|r| r.kind == "gateway.start").count(), 2);
    let leaves: Vec<_> = all.iter().map(|r| r.leaf).collect();
    assert_eq!(leaves.len() as u64, all.last().unwrap().seq + 1);
    let _root = merkle::root(&leaves);
    let report = verify_log(&dir.path().join("audit"), &dir.path().join("audit.pub"));
    assert!(report.passed(), "{}", report.render_text());
}

#[tokio::test]
async fn reloads_applied_and_rejected_are_recorded_with_the_plugins_digests() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let policy = |plugins: &str| {
        format!(
            r#"
{audit}
[[plugin]]
name = "allow-all"
file = "allow-all.wasm"

[[route]]
name = "open"
upstream = "{upstream}"
authentication = "none"
plugins = {plugins}
"#,
            audit = audit_toml("deny", "batched"),
            upstream = upstream.url(),
        )
    };
    let gw = TestGateway::start_from_file(&policy("[]"), |dir| {
        write_key(dir);
        std::fs::copy(
            portcullis_tests::plugin("allow-all"),
            dir.join("plugins/allow-all.wasm"),
        )
        .unwrap();
    })
    .await;
    let path = gw.dir.path().join("portcullis.toml");
    let applied_text = config_file_text(&policy(r#"["allow-all"]"#));
    std::fs::write(&path, &applied_text).unwrap();
    let applied = gw.running.live().reload("test-applied").await;
    assert!(applied.error.is_none(), "{applied:?}");
    // A broken configuration, then a corrupt plugin under a valid one: both rejected.
    let broken_text = config_file_text(&policy(r#"["missing"]"#));
    std::fs::write(&path, &broken_text).unwrap();
    let rejected = gw.running.live().reload("test-rejected").await;
    assert!(rejected.error.is_some());
    std::fs::write(&path, &applied_text).unwrap();
    let garbage = b"\0asm not really a component".to_vec();
    std::fs::write(gw.dir.path().join("plugins/allow-all.wasm"), &garbage).unwrap();
    let corrupt = gw.running.live().reload("test-corrupt").await;
    assert!(corrupt.error.is_some());
    let all = records(&gw.dir.path().join("audit"));
    let loaded = all
        .iter()
        .find(|r| r.kind == "config.loaded" && r.fields["trigger"] == "test-applied")
        .unwrap();
    let digest = hex::encode(sha2::Sha256::digest(
        std::fs::read(portcullis_tests::plugin("allow-all")).unwrap(),
    ));
    assert_eq!(loaded.fields["plugins"][0]["sha256"], digest.as_str());
    assert_eq!(
        loaded.fields["config_sha256"],
        hex::encode(sha2::Sha256::digest(applied_text.as_bytes())).as_str()
    );
    let rejected = all
        .iter()
        .find(|r| r.kind == "config.rejected" && r.fields["trigger"] == "test-rejected")
        .unwrap();
    assert!(
        rejected.fields["error"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{}",
        rejected.fields["error"]
    );
    assert_eq!(
        rejected.fields["config_sha256"],
        hex::encode(sha2::Sha256::digest(broken_text.as_bytes())).as_str(),
        "the rejected configuration file's sha256"
    );
    let corrupt = all
        .iter()
        .find(|r| r.kind == "config.rejected" && r.fields["trigger"] == "test-corrupt")
        .unwrap();
    let candidates = corrupt.fields["candidates"].as_str().unwrap();
    assert!(
        candidates.contains(&format!(
            "allow-all={}",
            hex::encode(sha2::Sha256::digest(&garbage))
        )),
        "the rejection names the corrupt file's sha256: {candidates}"
    );
}
