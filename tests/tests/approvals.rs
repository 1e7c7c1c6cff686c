//! Just-in-time approvals end to end: a real gateway (TLS, a local OIDC provider, a mock
//! upstream, the `guard` plugin holding `DELETE /vms/*`) parks requests until an approver
//! decides through the admin API or the CLI; grants are bound to the requester and the request
//! digest, single use unless scoped, and expire; pending requests and grants survive a
//! restart; webhooks are retried; every step is in the signed audit log.
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use portcullis_audit::record::Record;
use portcullis_tests::gateway::{Answer, TestGateway};
use portcullis_tests::mock_upstream::{MockUpstream, Reply};
use portcullis_tests::oidc::{Idp, SigningKey, provider_toml};
use portcullis_tests::tls::Certs;
use portcullis_tests::within;
use serde_json::{Value, json};

const AUD: &str = "api://portcullis";
const ORIGIN: &str = "test.portcullis/approvals";

/// How the gateway under test holds requests.
#[derive(Clone)]
struct Opts {
    /// The guard rule's budget (ms).
    budget_ms: u64,
    /// The route's `approval_hold`.
    hold: &'static str,
    /// `approvals.request_ttl`.
    request_ttl: &'static str,
    /// Announce to a local webhook receiver answering this sequence of statuses (then 200).
    webhook: Option<Vec<u16>>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            budget_ms: 0,
            hold: "60s",
            request_ttl: "1h",
            webhook: None,
        }
    }
}

struct Env {
    idp: Idp,
    upstream: MockUpstream,
    receiver: Option<(MockUpstream, Arc<AtomicUsize>)>,
    gw: TestGateway,
    opts: Opts,
    /// The store and the audit log: outside the gateway's directory, so a restart keeps them.
    state: tempfile::TempDir,
    /// The CA the identity provider's certificate chains to.
    ca: std::path::PathBuf,
    _idp_dir: tempfile::TempDir,
}

async fn env(opts: Opts) -> Env {
    let idp_dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(idp_dir.path());
    let idp = Idp::start(&certs, SigningKey::rsa("k1")).await;
    let upstream = MockUpstream::start(|_| Reply::json(r#"{"deleted":true}"#)).await;
    let receiver = match &opts.webhook {
        None => None,
        Some(statuses) => {
            let statuses = statuses.clone();
            let calls = Arc::new(AtomicUsize::new(0));
            let counter = calls.clone();
            let receiver = MockUpstream::start(move |_| {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let status = statuses.get(n).copied().unwrap_or(200);
                let mut reply = Reply::json("{}");
                reply.status = status;
                reply
            })
            .await;
            Some((receiver, calls))
        }
    };
    let state = tempfile::tempdir().unwrap();
    let key = portcullis_audit::note::SigningKey::generate(ORIGIN).unwrap();
    key.write(
        &state.path().join("audit.key"),
        &state.path().join("audit.pub"),
    )
    .unwrap();
    Env {
        gw: start(
            &idp,
            &upstream,
            receiver.as_ref(),
            state.path(),
            &certs.ca,
            &opts,
        )
        .await,
        idp,
        upstream,
        receiver,
        opts,
        state,
        ca: certs.ca.clone(),
        _idp_dir: idp_dir,
    }
}

async fn start(
    idp: &Idp,
    upstream: &MockUpstream,
    receiver: Option<&(MockUpstream, Arc<AtomicUsize>)>,
    state: &Path,
    ca: &Path,
    opts: &Opts,
) -> TestGateway {
    let webhook = match receiver {
        None => String::new(),
        Some((r, _)) => format!(
            "[[approvals.webhook]]\nname = \"ops-channel\"\nurl = \"{}/hooks/T000/SECRETPATH\"\nformat = \"slack\"\nbackoff = \"20ms\"\nmax_attempts = 4\n",
            r.url()
        ),
    };
    let config = format!(
        r#"
{provider}
[audit]
dir = "{state}/audit"
origin = "{ORIGIN}"
signing_key_file = "{state}/audit.key"

[approvals]
store = "{state}/approvals.db"
identity_provider = "corp"
request_ttl = "{ttl}"
grant_ttl = "10m"
retry_after = "7s"
{webhook}

# Asks for the JSON body of /vms/vm3 (a body rule): a plugin that wants the body runs before
# the one that holds, and must not make the gateway forget the hold.
[[plugin]]
name = "guard"
alias = "inspect"
file = "guard.wasm"
[plugin.config]
default = "allow"
[[plugin.config.rules]]
id = "deny-force"
paths = ["/vms/vm3"]
body = [{{ pointer = "/force", equals = true }}]
action = "deny"
message = "no forced deletes"

[[plugin]]
name = "guard"
alias = "hold"
file = "guard.wasm"
[plugin.config]
default = "allow"
[[plugin.config.rules]]
id = "hold-vm-delete"
operations = ["DELETE /vms/*"]
action = "require-approval"
approvers = ["ops"]
budget_ms = {budget}
message = "deleting a virtual machine"

[[route]]
name = "api"
upstream = "{upstream}"
plugins = ["inspect", "hold"]
approval_hold = "{hold}"
[[route.access]]
name = "agents"
roles = ["agent"]
"#,
        provider = provider_toml("corp", &idp.issuer(), AUD, ""),
        state = state.display(),
        ttl = opts.request_ttl,
        budget = opts.budget_ms,
        hold = opts.hold,
        upstream = upstream.url(),
    );
    TestGateway::start(&config, |dir| {
        std::fs::copy(ca, dir.join("idp-ca.pem")).unwrap();
    })
    .await
}

impl Env {
    fn token(&self, subject: &str, roles: &[&str], groups: &[&str]) -> String {
        let mut claims = self.idp.claims(AUD, subject);
        claims["roles"] = json!(roles);
        claims["groups"] = json!(groups);
        self.idp.mint(&claims)
    }

    /// The agent (requester): role `agent`; also in `ops`, so only separation of duties stops
    /// it approving its own requests.
    fn agent(&self) -> String {
        self.token("agent-7", &["agent"], &["ops"])
    }

    /// An approver in `ops`.
    fn alice(&self) -> String {
        self.token("alice", &[], &["ops"])
    }

    fn admin(&self) -> SocketAddr {
        self.gw.running.admin_addr().unwrap()
    }

    /// Send as the agent in the background (the request is held for approval).
    fn spawn_send(&self, method: &'static str, path: &'static str) -> JoinHandle<Answer> {
        let (client, bearer) = (self.gw.client(true), format!("Bearer {}", self.agent()));
        tokio::spawn(async move {
            let headers = [
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ];
            client.send(method, path, &headers, "").await
        })
    }

    async fn send(&self, method: &str, path: &str, body: &str) -> Answer {
        let bearer = format!("Bearer {}", self.agent());
        self.gw
            .client(false)
            .send(
                method,
                path,
                &[
                    ("authorization", bearer.as_str()),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await
    }

    async fn api(
        &self,
        token: &str,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, text) = portcullis::cli::admin_call(
            self.admin(),
            method,
            path,
            Some(token),
            body.map(|b| b.to_string()),
        )
        .await
        .unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn decide(&self, token: &str, id: &str, action: &str, body: Value) -> (u16, Value) {
        self.api(
            token,
            http::Method::POST,
            &format!("/api/approvals/{id}/{action}"),
            Some(body),
        )
        .await
    }

    async fn pending(&self) -> Vec<Value> {
        let (status, list) = self
            .api(&self.alice(), http::Method::GET, "/api/approvals", None)
            .await;
        assert_eq!(status, 200, "{list}");
        list["approvals"].as_array().cloned().unwrap_or_default()
    }

    /// Wait until `n` requests are pending.
    async fn wait_pending(&self, n: usize) -> Vec<Value> {
        for _ in 0..400 {
            let pending = self.pending().await;
            if pending.len() >= n {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{n} pending approval requests never showed up");
    }

    fn deletes(&self) -> usize {
        self.upstream
            .seen()
            .iter()
            .filter(|s| s.method == "DELETE")
            .count()
    }

    fn records(&self) -> Vec<Record> {
        portcullis_tests::audit_records(&self.state.path().join("audit"))
    }

    fn records_of(&self, kind: &str, approval: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r.kind == kind && r.fields["approval_id"] == approval)
            .map(|r| Value::Object(r.fields))
            .collect()
    }

    /// Stop the gateway (one process owns the audit log), then start another on the same
    /// store and log.
    async fn restart(self) -> Env {
        let Env {
            idp,
            upstream,
            receiver,
            gw,
            opts,
            state,
            ca,
            _idp_dir,
        } = self;
        gw.running.shutdown().await;
        let gw = start(&idp, &upstream, receiver.as_ref(), state.path(), &ca, &opts).await;
        Env {
            idp,
            upstream,
            receiver,
            gw,
            opts,
            state,
            ca,
            _idp_dir,
        }
    }
}

fn approval_id(answer: &Answer) -> String {
    answer
        .headers
        .get("x-portcullis-approval-id")
        .unwrap_or_else(|| panic!("no approval id: {} {}", answer.status, answer.text()))
        .to_str()
        .unwrap()
        .to_string()
}

fn code(answer: &Answer) -> String {
    answer.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_is_forwarded_once_approved_and_every_step_is_on_record() {
    within(Duration::from_secs(60), async {
        let env = env(Opts {
            budget_ms: 60_000,
            ..Opts::default()
        })
        .await;
        // A request no rule holds passes straight through.
        assert_eq!(env.send("GET", "/vms/vm1", "").await.status, 200);
        let held = env.spawn_send("DELETE", "/vms/vm1?force=true");
        let pending = env.wait_pending(1).await;
        assert_eq!(
            env.deletes(),
            0,
            "nothing reaches the upstream before approval"
        );
        let request = &pending[0];
        let id = request["id"].as_str().unwrap().to_string();
        assert_eq!(request["requester"]["subject"], "agent-7");
        assert_eq!(request["operation"], "DELETE /vms/vm1");
        assert_eq!(
            request["summary"],
            "deleting a virtual machine: DELETE /vms/vm1 (rule hold-vm-delete)"
        );
        assert_eq!(request["approver_groups"], json!(["ops"]));
        assert_eq!(request["can_decide"], true);
        assert!(request["digest"].as_str().unwrap().len() == 64);

        let (status, decided) = env
            .decide(
                &env.alice(),
                &id,
                "approve",
                json!({"reason": "change CHG-1"}),
            )
            .await;
        assert_eq!(status, 200, "{decided}");
        assert_eq!(decided["status"], "approved");
        assert_eq!(decided["decision"]["by"]["subject"], "alice");

        let answer = held.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json(), json!({"deleted": true}));
        assert_eq!(env.deletes(), 1);
        // A second decision is refused.
        let (status, again) = env
            .decide(&env.alice(), &id, "deny", json!({"reason": "x"}))
            .await;
        assert_eq!(
            (status, again["error"]["code"].as_str()),
            (409, Some("NotPending"))
        );

        // On record: requested, approved (requester and approver both named, and different),
        // the grant used, and the request's decision naming the approval.
        let requested = env.records_of("approval.requested", &id);
        assert_eq!(requested.len(), 1);
        assert_eq!(requested[0]["requester"]["subject"], "agent-7");
        let approved = env.records_of("approval.approved", &id);
        assert_eq!(approved.len(), 1);
        assert_eq!(approved[0]["approver"]["subject"], "alice");
        assert_eq!(approved[0]["requester"]["subject"], "agent-7");
        assert_eq!(approved[0]["reason"], "change CHG-1");
        assert_eq!(env.records_of("approval.grant_used", &id).len(), 1);
        let decisions: Vec<Record> = env
            .records()
            .into_iter()
            .filter(|r| {
                r.kind == "request.decision" && r.fields.get("approval") == Some(&json!(id))
            })
            .collect();
        assert_eq!(decisions.len(), 1);
        assert_eq!(decisions[0].fields["decision"], "approved");
        // No token text in the store's views or the log.
        let token = env.agent();
        let signature = token.rsplit('.').next().unwrap();
        let log: String = env
            .records()
            .iter()
            .map(|r| format!("{:?}", r.fields))
            .collect();
        assert!(!log.contains(signature));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_request_gets_403_with_the_approvers_reason() {
    within(Duration::from_secs(60), async {
        let env = env(Opts {
            budget_ms: 60_000,
            ..Opts::default()
        })
        .await;
        let held = env.spawn_send("DELETE", "/vms/db1");
        let id = env.wait_pending(1).await[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        // A denial needs a reason.
        let (status, _) = env.decide(&env.alice(), &id, "deny", json!({})).await;
        assert_eq!(status, 400);
        let (status, body) = env
            .decide(
                &env.alice(),
                &id,
                "deny",
                json!({"reason": "db1 is production"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let answer = held.await.unwrap();
        assert_eq!(answer.status, 403);
        assert_eq!(code(&answer), "ApprovalDenied");
        assert!(
            answer.text().contains("db1 is production"),
            "{}",
            answer.text()
        );
        assert_eq!(approval_id(&answer), id);
        assert_eq!(env.deletes(), 0);
        let denied = env.records_of("approval.denied", &id);
        assert_eq!(denied[0]["approver"]["subject"], "alice");
        assert_eq!(denied[0]["reason"], "db1 is production");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requester_and_non_approvers_cannot_decide_and_are_on_record() {
    within(Duration::from_secs(60), async {
        let env = env(Opts::default()).await;
        let answer = env.send("DELETE", "/vms/vm2", "").await;
        assert_eq!(
            (answer.status, code(&answer)),
            (403, "ApprovalPending".into())
        );
        assert_eq!(answer.headers["retry-after"], "7");
        let id = approval_id(&answer);
        assert!(answer.text().contains(&id));

        // The agent is in `ops` too, but it asked: separation of duties.
        let (status, body) = env.decide(&env.agent(), &id, "approve", json!({})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("SelfApproval")),
            "{body}"
        );
        // A different token of the same subject is still the requester.
        let same_subject = env.token("agent-7", &[], &["ops"]);
        let (status, _) = env.decide(&same_subject, &id, "approve", json!({})).await;
        assert_eq!(status, 403);
        // Someone outside every approver group.
        let mallory = env.token("mallory", &["agent"], &["dev"]);
        let (status, body) = env.decide(&mallory, &id, "approve", json!({})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("NotAnApprover")),
            "{body}"
        );
        // No token, a forged one, or one from nowhere: 401.
        let (status, text) = portcullis::cli::admin_call(
            env.admin(),
            http::Method::POST,
            &format!("/api/approvals/{id}/approve"),
            None,
            Some("{}".into()),
        )
        .await
        .unwrap();
        assert_eq!(status, 401, "{text}");
        let forged = SigningKey::rsa("k1").mint(&env.idp.claims(AUD, "alice"));
        let (status, _) = env.decide(&forged, &id, "approve", json!({})).await;
        assert_eq!(status, 401);

        // Still pending; the refusals are in the audit log with who tried.
        let (status, shown) = env
            .api(
                &env.alice(),
                http::Method::GET,
                &format!("/api/approvals/{id}"),
                None,
            )
            .await;
        assert_eq!((status, shown["status"].as_str()), (200, Some("pending")));
        let refused = env.records_of("approval.refused", &id);
        let whys: Vec<(&str, &str)> = refused
            .iter()
            .map(|r| {
                (
                    r["why"].as_str().unwrap(),
                    r["approver"]["subject"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            whys,
            [
                ("self-approval", "agent-7"),
                ("self-approval", "agent-7"),
                ("not-an-approver", "mallory")
            ]
        );
        // The agent sees its own request, and that it may not decide it; someone neither
        // requester nor approver sees nothing of it.
        let (_, list) = env
            .api(&env.agent(), http::Method::GET, "/api/approvals", None)
            .await;
        assert_eq!(list["approvals"][0]["id"], id.as_str());
        assert_eq!(list["approvals"][0]["can_decide"], false);
        let (status, list) = env
            .api(&mallory, http::Method::GET, "/api/approvals", None)
            .await;
        assert_eq!(
            (status, list["approvals"].as_array().unwrap().len()),
            (200, 0)
        );
        let (status, _) = env
            .api(
                &mallory,
                http::Method::GET,
                &format!("/api/approvals/{id}"),
                None,
            )
            .await;
        assert_eq!(status, 404);
        assert_eq!(env.deletes(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_bound_to_the_digest_and_passes_once() {
    within(Duration::from_secs(60), async {
        let env = env(Opts::default()).await;
        let first = env
            .send("DELETE", "/vms/vm3", r#"{"keepDisks":true}"#)
            .await;
        let id = approval_id(&first);
        // The first plugin wanted the body; its deny still wins, and its allow does not let a
        // held request through.
        let forced = env.send("DELETE", "/vms/vm3", r#"{"force":true}"#).await;
        assert_eq!((forced.status, code(&forced)), (403, "deny-force".into()));
        let unforced = env.send("DELETE", "/vms/vm3", r#"{"force":false}"#).await;
        assert_eq!(code(&unforced), "ApprovalPending");
        // Asking again while pending joins the same request.
        let again = env
            .send("DELETE", "/vms/vm3", r#"{"keepDisks":true}"#)
            .await;
        assert_eq!(approval_id(&again), id);
        let (status, body) = env.decide(&env.alice(), &id, "approve", json!({})).await;
        assert_eq!(status, 200, "{body}");

        // A different body, URL or requester does not pass on this grant.
        let other_body = env
            .send("DELETE", "/vms/vm3", r#"{"keepDisks":false}"#)
            .await;
        assert_eq!(code(&other_body), "ApprovalPending");
        assert_ne!(approval_id(&other_body), id);
        let other_url = env
            .send("DELETE", "/vms/vm3?x=1", r#"{"keepDisks":true}"#)
            .await;
        assert_eq!(code(&other_url), "ApprovalPending");
        let bob = format!("Bearer {}", env.token("bob", &["agent"], &[]));
        let by_bob = env
            .gw
            .client(false)
            .send(
                "DELETE",
                "/vms/vm3",
                &[
                    ("authorization", bob.as_str()),
                    ("content-type", "application/json"),
                ],
                r#"{"keepDisks":true}"#,
            )
            .await;
        assert_eq!(code(&by_bob), "ApprovalPending");
        assert_eq!(env.deletes(), 0);

        // The identical request passes, once.
        let passed = env
            .send("DELETE", "/vms/vm3", r#"{"keepDisks":true}"#)
            .await;
        assert_eq!(passed.status, 200, "{}", passed.text());
        assert_eq!(
            env.upstream.seen().last().unwrap().body.as_ref(),
            br#"{"keepDisks":true}"#
        );
        let once_more = env
            .send("DELETE", "/vms/vm3", r#"{"keepDisks":true}"#)
            .await;
        assert_eq!(code(&once_more), "ApprovalPending");
        assert_ne!(
            approval_id(&once_more),
            id,
            "a new request after the grant was used"
        );
        assert_eq!(env.deletes(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_grant_lets_matching_operations_through_until_it_expires() {
    within(Duration::from_secs(60), async {
        let env = env(Opts::default()).await;
        let id = approval_id(&env.send("DELETE", "/vms/a", "").await);
        // The window is bounded by approvals.max_scope.
        let (status, _) = env
            .decide(&env.alice(), &id, "approve", json!({"scope": {"operation": "DELETE /vms/*", "window": "9h"}}))
            .await;
        assert_eq!(status, 400);
        let (status, body) = env
            .decide(&env.alice(), &id, "approve", json!({"reason": "maintenance", "scope": {"operation": "DELETE /vms/*", "window": "4s"}}))
            .await;
        assert_eq!(status, 200, "{body}");
        // Other matching operations pass, more than once; others do not.
        for path in ["/vms/b", "/vms/c", "/vms/b"] {
            let answer = env.send("DELETE", path, "").await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        }
        assert_eq!(env.deletes(), 3);
        let used = env.records_of("approval.grant_used", &id);
        assert_eq!(used.len(), 3);
        assert!(used.iter().all(|r| r["scoped"] == true));
        // Past the window, they are held again.
        tokio::time::sleep(Duration::from_millis(4200)).await;
        let late = env.send("DELETE", "/vms/d", "").await;
        assert_eq!(code(&late), "ApprovalPending", "{}", late.text());
        assert_eq!(env.deletes(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_expire_and_cannot_be_approved_afterwards() {
    within(Duration::from_secs(60), async {
        let env = env(Opts {
            budget_ms: 60_000,
            hold: "60s",
            request_ttl: "1500ms",
            ..Opts::default()
        })
        .await;
        // Held past its request's lifetime: the client learns it expired.
        let answer = env.send("DELETE", "/vms/old", "").await;
        assert_eq!(
            (answer.status, code(&answer)),
            (403, "ApprovalExpired".into()),
            "{}",
            answer.text()
        );
        let id = approval_id(&answer);
        let (status, body) = env.decide(&env.alice(), &id, "approve", json!({})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("NotPending")),
            "{body}"
        );
        assert_eq!(env.records_of("approval.expired", &id).len(), 1);
        assert_eq!(env.deletes(), 0);
        // Asking again makes a new request.
        let again = env.spawn_send("DELETE", "/vms/old");
        let pending = env.wait_pending(1).await;
        assert_ne!(pending[0]["id"], id);
        let (status, _) = env
            .decide(
                &env.alice(),
                pending[0]["id"].as_str().unwrap(),
                "approve",
                json!({}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(again.await.unwrap().status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parked_requests_are_all_answered_when_approved() {
    within(Duration::from_secs(120), async {
        let env = env(Opts {
            budget_ms: 60_000,
            ..Opts::default()
        })
        .await;
        let client = env.gw.client(true);
        let bearer = format!("Bearer {}", env.agent());
        let parked: Vec<_> = (0..100)
            .map(|i| {
                let (client, bearer) = (client.clone(), bearer.clone());
                tokio::spawn(async move {
                    client
                        .send(
                            "DELETE",
                            &format!("/vms/vm-{i}"),
                            &[("authorization", bearer.as_str())],
                            "",
                        )
                        .await
                })
            })
            .collect();
        let pending = env.wait_pending(100).await;
        assert_eq!(pending.len(), 100);
        assert_eq!(env.deletes(), 0);
        for request in &pending {
            let (status, body) = env
                .decide(
                    &env.alice(),
                    request["id"].as_str().unwrap(),
                    "approve",
                    json!({}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
        for task in parked {
            let answer = task.await.unwrap();
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
        assert_eq!(env.deletes(), 100);
        assert!(env.pending().await.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_and_grants_survive_a_restart_and_a_stop_answers_held_requests() {
    within(Duration::from_secs(90), async {
        let mut env = env(Opts {
            budget_ms: 60_000,
            hold: "60s",
            ..Opts::default()
        })
        .await;
        // A request held when the gateway stops is answered with its approval id.
        let held = env.spawn_send("DELETE", "/vms/p1");
        let id = env.wait_pending(1).await[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        env = env.restart().await;
        let answer = held.await.unwrap();
        assert_eq!(
            (answer.status, code(&answer)),
            (403, "ApprovalPending".into()),
            "{}",
            answer.text()
        );
        assert_eq!(approval_id(&answer), id);

        // The new process knows the pending request; approved there, the retry passes.
        let pending = env.pending().await;
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0]["id"], id);
        let (status, _) = env.decide(&env.alice(), &id, "approve", json!({})).await;
        assert_eq!(status, 200);
        // The grant outlives another restart, and is used once.
        env = env.restart().await;
        let retry = env.send("DELETE", "/vms/p1", "").await;
        assert_eq!(retry.status, 200, "{}", retry.text());
        assert_eq!(env.deletes(), 1);
        env = env.restart().await;
        let (_, shown) = env
            .api(
                &env.alice(),
                http::Method::GET,
                &format!("/api/approvals/{id}"),
                None,
            )
            .await;
        let grants = shown["grants"].as_array().unwrap();
        assert_eq!(grants.len(), 1);
        assert!(
            grants[0]["used_at"].is_u64(),
            "used, and that is remembered: {shown}"
        );
        assert_eq!(env.deletes(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_retried_with_backoff_and_every_attempt_is_recorded() {
    within(Duration::from_secs(60), async {
        let env = env(Opts {
            webhook: Some(vec![503, 500]),
            ..Opts::default()
        })
        .await;
        let id = approval_id(&env.send("DELETE", "/vms/w1", "").await);
        let (receiver, calls) = env.receiver.as_ref().unwrap();
        for _ in 0..200 {
            if !env.records_of("approval.notified", &id).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "two failures, then delivered"
        );
        let seen = receiver.seen();
        assert_eq!(seen.len(), 3);
        assert!(
            seen.iter()
                .all(|s| s.path_and_query == "/hooks/T000/SECRETPATH")
        );
        let message: Value = serde_json::from_slice(&seen[2].body).unwrap();
        let text = message.to_string();
        assert!(text.contains(&id), "{text}");
        assert!(
            text.contains(&format!("http://{}/approvals#{id}", env.admin())),
            "the link to the page: {text}"
        );
        assert!(text.contains("deleting a virtual machine"));
        assert!(!text.contains(&env.agent()), "no token in a notification");

        let notified = env.records_of("approval.notified", &id);
        assert_eq!(notified.len(), 1);
        assert_eq!(notified[0]["delivered"], true);
        assert_eq!(notified[0]["attempts"], 3);
        assert_eq!(notified[0]["errors"].as_array().unwrap().len(), 2);
        // The secret part of the webhook URL is in no record.
        let log: String = env
            .records()
            .iter()
            .map(|r| format!("{:?}", r.fields))
            .collect();
        assert!(!log.contains("SECRETPATH"));
        // The attempts are in the store, shown to approvers.
        let (_, shown) = env
            .api(
                &env.alice(),
                http::Method::GET,
                &format!("/api/approvals/{id}"),
                None,
            )
            .await;
        let attempts: Vec<bool> = shown["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["ok"].as_bool().unwrap())
            .collect();
        assert_eq!(attempts, [false, false, true]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_approves_and_denies() {
    within(Duration::from_secs(60), async {
        let env = env(Opts::default()).await;
        let first = approval_id(&env.send("DELETE", "/vms/c1", "").await);
        let second = approval_id(&env.send("DELETE", "/vms/c2", "").await);
        let token_file = env.state.path().join("alice.token");
        std::fs::write(&token_file, format!("{}\n", env.alice())).unwrap();
        let list = env.pending().await;
        let text = portcullis::cli::render_approvals(&json!({"approvals": list}));
        assert!(text.contains(&first) && text.contains(&second), "{text}");
        assert!(
            text.contains("DELETE") && text.contains("by=agent-7"),
            "{text}"
        );

        use portcullis::cli::{ApprovalsAction, approvals};
        let approve = ApprovalsAction::Approve {
            id: first.clone(),
            reason: "ok".into(),
            scope_operation: None,
            scope_window: None,
        };
        assert_eq!(approvals(approve, env.admin(), Some(&token_file)).await, 0);
        let deny = ApprovalsAction::Deny {
            id: second.clone(),
            reason: "no".into(),
        };
        assert_eq!(approvals(deny, env.admin(), Some(&token_file)).await, 0);
        // Deciding again is refused by the gateway (exit 1); a missing token file is exit 2.
        let again = ApprovalsAction::Deny {
            id: first.clone(),
            reason: "no".into(),
        };
        assert_eq!(approvals(again, env.admin(), Some(&token_file)).await, 1);
        let show = ApprovalsAction::Show { id: first.clone() };
        assert_eq!(
            approvals(show, env.admin(), Some(&env.state.path().join("none"))).await,
            2
        );

        assert_eq!(env.send("DELETE", "/vms/c1", "").await.status, 200);
        let denied = env.send("DELETE", "/vms/c2", "").await;
        assert_eq!(
            code(&denied),
            "ApprovalPending",
            "a denied request asked again is a new request"
        );
        assert_ne!(approval_id(&denied), second);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_that_never_got_through_is_resumed_after_a_restart() {
    within(Duration::from_secs(60), async {
        // The receiver fails the first four deliveries: all the attempts of the first process.
        let mut env = env(Opts {
            webhook: Some(vec![503; 4]),
            ..Opts::default()
        })
        .await;
        let id = approval_id(&env.send("DELETE", "/vms/r1", "").await);
        let notified = |env: &Env| env.records_of("approval.notified", &id);
        for _ in 0..200 {
            if !notified(&env).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(notified(&env)[0]["delivered"], false);
        assert_eq!(env.receiver.as_ref().unwrap().1.load(Ordering::SeqCst), 4);

        // The next process announces the still pending request again, and it gets through.
        env = env.restart().await;
        for _ in 0..200 {
            if notified(&env).len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let records = notified(&env);
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(records[1]["delivered"], true);
        let (receiver, calls) = env.receiver.as_ref().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let seen = receiver.seen();
        assert_eq!(
            seen[0].headers["x-portcullis-delivery"], seen[4].headers["x-portcullis-delivery"],
            "the same delivery id, so a receiver can drop a repeat"
        );
        // A delivered announcement is not repeated by a further restart.
        env = env.restart().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(env.receiver.as_ref().unwrap().1.load(Ordering::SeqCst), 5);
    })
    .await;
}
