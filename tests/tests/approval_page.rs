//! The approvers' web page end to end, in a real browser: agent A's DELETE is held by the
//! `guard` plugin for approval; approver B opens `/approvals` on the admin listener in headless
//! Chromium, pastes a token, loads the list, clicks Approve; the held DELETE then reaches the
//! upstream, once. The page runs under the Content-Security-Policy the gateway serves it with.
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::time::Duration;

use portcullis_tests::browser::Browser;
use portcullis_tests::gateway::TestGateway;
use portcullis_tests::mock_upstream::{MockUpstream, Reply};
use portcullis_tests::oidc::{Idp, SigningKey, provider_toml};
use portcullis_tests::tls::Certs;
use serde_json::{Value, json};

const AUD: &str = "api://portcullis";

/// `GET path` on the admin listener with a bearer token: status and JSON body.
async fn admin_api(admin: SocketAddr, path: &str, token: &str) -> (u16, Value) {
    let (status, body) =
        portcullis::cli::admin_call(admin, http::Method::GET, path, Some(token), None)
            .await
            .unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_a_held_request_in_the_browser_and_it_goes_through_once() {
    portcullis_tests::plugin("guard");
    let idp_dir = tempfile::tempdir().unwrap();
    let idp_certs = Certs::new(idp_dir.path());
    let idp = Idp::start(&idp_certs, SigningKey::rsa("k1")).await;
    let upstream = MockUpstream::start(|_| Reply::json(r#"{"deleted":true}"#)).await;
    let config = format!(
        r#"
{provider}
[approvals]
store = "approvals.db"
identity_provider = "test-idp"

[[plugin]]
name = "guard"
file = "guard.wasm"
[plugin.config]
default = "allow"
[[plugin.config.rules]]
id = "approve-deletes"
methods = ["DELETE"]
action = "require-approval"
approvers = ["ops"]
budget_ms = 60000
message = "deleting an item"

[[route]]
name = "items"
upstream = "{upstream}"
plugins = ["guard"]
approval_hold = "60s"
[[route.access]]
name = "agents"
roles = ["agent"]
"#,
        provider = provider_toml("test-idp", &idp.issuer(), AUD, ""),
        upstream = upstream.url(),
    );
    let ca = idp_certs.ca.clone();
    let gw = TestGateway::start(&config, |dir| {
        std::fs::copy(&ca, dir.join("idp-ca.pem")).unwrap();
    })
    .await;
    let admin = gw.running.admin_addr().expect("the admin listener runs");

    // Agent A may call the route; approver B is in group "ops". Not the same subject.
    let mut a = idp.claims(AUD, "agent-a");
    a["roles"] = json!(["agent"]);
    let agent_token = idp.mint(&a);
    let mut b = idp.claims(AUD, "approver-b");
    b["groups"] = json!(["ops"]);
    let approver_token = idp.mint(&b);

    portcullis_tests::within(Duration::from_secs(150), async {
        // A's DELETE: held by the gateway until B decides (the hold is 60 s).
        let client = gw.client(false);
        let delete = tokio::spawn(async move {
            client
                .send(
                    "DELETE",
                    "/items/42",
                    &[("authorization", &format!("Bearer {agent_token}"))],
                    bytes::Bytes::new(),
                )
                .await
        });

        // The approval request exists before the browser looks for it.
        let id = loop {
            if delete.is_finished() {
                panic!(
                    "the DELETE was answered instead of held: {:?}",
                    delete.await.unwrap()
                );
            }
            let (status, list) =
                admin_api(admin, "/api/approvals?status=pending", &approver_token).await;
            assert_eq!(status, 200, "{list}");
            if let Some(first) = list["approvals"].as_array().and_then(|l| l.first()) {
                assert_eq!(first["requester"]["subject"], "agent-a", "{first}");
                assert_eq!(first["can_decide"], true, "{first}");
                break first["id"].as_str().unwrap().to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            upstream.seen().is_empty(),
            "nothing forwarded before approval"
        );

        // B approves it in the browser.
        let page_url = format!("http://{admin}/approvals");
        let shown = {
            let (id, approver_token) = (id.clone(), approver_token.clone());
            tokio::task::spawn_blocking(move || {
                let browser = Browser::launch();
                let page = browser.open(&page_url);
                page.type_into("#token", &approver_token);
                page.click("#load");
                let row = format!("tr[data-id=\"{id}\"]");
                page.wait_for(&row);
                let shown = page.text(&row);
                let approve = format!("{row} button.approve");
                assert_eq!(
                    page.eval(&format!("document.querySelector('{approve}').disabled")),
                    json!(false),
                    "B may decide {id}, but the Approve button is disabled: {shown}"
                );
                page.click(&approve);
                page.wait_for_text("#status", &format!("approved {id}"));
                // The list is loaded again: the request is no longer pending.
                page.wait_until(
                    &format!("{id} to leave the list"),
                    &format!("!document.querySelector('{row}')"),
                );
                // Under the gateway's own Content-Security-Policy: no violation, no error.
                page.assert_no_problems();
                shown
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        };
        for needle in [
            id.as_str(),
            "agent-a",
            "items",
            "(rule approve-deletes)",
            "DELETE",
            "/items/42",
            "ops",
        ] {
            assert!(shown.contains(needle), "the row lacks {needle:?}: {shown}");
        }

        // The held DELETE went through, once.
        let answer = delete.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json(), json!({"deleted": true}));
        let seen = upstream.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].method, "DELETE");
        assert_eq!(seen[0].path_and_query, "/items/42");

        let (status, approved) =
            admin_api(admin, &format!("/api/approvals/{id}"), &approver_token).await;
        assert_eq!(status, 200, "{approved}");
        assert_eq!(approved["status"], "approved", "{approved}");
        assert_eq!(
            approved["decision"]["by"]["subject"], "approver-b",
            "{approved}"
        );
    })
    .await;
}
