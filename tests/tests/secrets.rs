//! No secret, token or key ever reaches a log line: every log the gateway writes while serving
//! requests with each kind of credential (and failing to get one) is captured at the most
//! verbose level of the gateway's own logs and searched for the secrets.
#![allow(clippy::unwrap_used)]
use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use portcullis_tests::azurite::KEY;
use portcullis_tests::gateway::TestGateway;
use portcullis_tests::mock_upstream::{MockUpstream, Reply};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_appears_in_the_gateways_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("portcullis=trace,info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let good_idp = MockUpstream::start(|_| {
        Reply::json(r#"{"access_token":"minted-access-token","expires_in":3600}"#)
    })
    .await;
    let bad_idp = MockUpstream::start(|_| {
        let mut r = Reply::json(r#"{"error":"invalid_client","error_description":"x"}"#);
        r.status = 401;
        r
    })
    .await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let config = format!(
        r#"
[[route]]
authentication = "none"
name = "oauth"
path_prefix = "/oauth"
upstream = "{u}"
credential = {{ type = "oauth2-client-credentials", token_url = "{good}/t", client_id = "c", secret_file = "secret", scope = "s" }}
[[route]]
authentication = "none"
name = "oauth-down"
path_prefix = "/down"
upstream = "{u}"
credential = {{ type = "oauth2-client-credentials", token_url = "{bad}/t", client_id = "c", secret_file = "secret", scope = "s" }}
[[route]]
authentication = "none"
name = "key"
path_prefix = "/key"
upstream = "{u}"
credential = {{ type = "header", name = "api-key", value_file = "api-key" }}
[[route]]
authentication = "none"
name = "blob"
kind = "azure-storage"
path_prefix = "/devstoreaccount1"
path_style = true
upstream = "{u}"
credential = {{ type = "azure-shared-key", account = "devstoreaccount1", key_file = "account-key" }}
"#,
        u = upstream.url(),
        good = good_idp.url(),
        bad = bad_idp.url()
    );
    let gw = TestGateway::start(&config, |dir| {
        std::fs::write(dir.join("secret"), "client-secret-value").unwrap();
        std::fs::write(dir.join("api-key"), "static-api-key-value").unwrap();
        std::fs::write(dir.join("account-key"), KEY).unwrap();
    })
    .await;
    let client = gw.client(true);
    let agent = [("authorization", "Bearer agent-token-value")];
    for path in [
        "/oauth/a",
        "/down/a",
        "/key/a",
        "/devstoreaccount1/c?restype=container",
    ] {
        client.send("GET", path, &agent, Bytes::new()).await;
    }
    let signature = upstream
        .seen()
        .iter()
        .find_map(|s| {
            s.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.starts_with("SharedKey"))
                .map(str::to_string)
        })
        .unwrap();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("request"), "the capture works: {logs}");
    for secret in [
        "client-secret-value",
        "minted-access-token",
        "static-api-key-value",
        "agent-token-value",
        KEY,
        signature.trim_start_matches("SharedKey devstoreaccount1:"),
    ] {
        assert!(!logs.contains(secret), "{secret} is in the logs:\n{logs}");
    }
}
