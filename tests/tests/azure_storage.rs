//! An `azure-storage` route in front of Azurite, driven by the real Python Azure Storage SDK
//! over TLS. The SDK holds no credential: the gateway signs every request with the account key
//! (Shared Key), and Azurite verifies the signatures. A test plugin's deny must reach the SDK
//! as a normal service error. With identity on, the agent's SDK authenticates with its own
//! token (a TokenCredential) and changes nothing else. (That the same anonymous SDK calls straight to Azurite are
//! refused is shown by the harness's own test, `azurite_sdk.rs`.)
#![allow(clippy::unwrap_used)]
use portcullis_tests::azurite::{ACCOUNT, Azurite, KEY, blob_bytes, gateway_args, run_blob_client};
use portcullis_tests::gateway::TestGateway;
use portcullis_tests::oidc::{Idp, SigningKey, provider_toml};
use portcullis_tests::tls::Certs;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn blob_sha256(name: &str, size: usize) -> String {
    hex::encode(Sha256::digest(blob_bytes(name, size)))
}

async fn gateway(azurite: &Azurite, plugins: &str) -> TestGateway {
    let config = format!(
        r#"
[[plugin]]
name = "deny-operations"
file = "deny-operations.wasm"
config = {{ operations = ["DeleteContainer", "SetContainerAcl"] }}

[[route]]
authentication = "none"
name = "blob"
kind = "azure-storage"
path_prefix = "/{ACCOUNT}"
path_style = true
upstream = "{}"
body_limit = "1MiB"
plugins = {plugins}
credential = {{ type = "azure-shared-key", account = "{ACCOUNT}", key_file = "account-key" }}
"#,
        azurite.endpoint()
    );
    TestGateway::start(&config, |dir| {
        std::fs::write(dir.join("account-key"), format!("{KEY}\n")).unwrap();
    })
    .await
}

/// Run the SDK client against the gateway (on a blocking thread: it is a child process).
async fn sdk(gw: &TestGateway, actions: &[String]) -> Vec<Value> {
    sdk_with(gw, &[], actions).await
}

/// The same, with extra client arguments (e.g. `--token-file`).
async fn sdk_with(gw: &TestGateway, extra: &[String], actions: &[String]) -> Vec<Value> {
    let mut args = gateway_args(gw);
    args.extend(extra.iter().cloned());
    args.extend(actions.iter().cloned());
    tokio::task::spawn_blocking(move || run_blob_client(&args))
        .await
        .unwrap()
}

fn assert_ok(line: &Value) {
    assert_eq!(line["ok"], true, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_works_through_the_gateway_which_signs_with_shared_key() {
    portcullis_tests::plugin("deny-operations");
    let azurite = Azurite::start();
    let gw = gateway(&azurite, r#"["deny-operations"]"#).await;
    // 3 MiB in one PutBlob and 5 MiB + 1 in blocks: both bigger than the route's 1 MiB body
    // limit, and no plugin asked for the body, so they stream through.
    let (single, blocks) = (3 << 20, (5 << 20) + 1);
    let lines = sdk(
        &gw,
        &[
            "create-container:agents".into(),
            "upload:agents/notes.txt:1000".into(),
            format!("upload:agents/single.bin:{single}"),
            format!("upload-blocks:agents/blocks.bin:{blocks}"),
            "list-containers".into(),
            "list-blobs:agents".into(),
            "download:agents/single.bin".into(),
            "download:agents/blocks.bin".into(),
            "delete-blob:agents/notes.txt".into(),
        ],
    )
    .await;
    assert_eq!(lines.len(), 9, "{lines:?}");
    for line in &lines {
        assert_ok(line);
    }
    assert_eq!(lines[1]["sha256"], blob_sha256("notes.txt", 1000));
    assert_eq!(lines[4]["names"], serde_json::json!(["agents"]));
    assert_eq!(
        lines[5]["names"],
        serde_json::json!(["blocks.bin", "notes.txt", "single.bin"])
    );
    assert_eq!(lines[6]["size"], single);
    assert_eq!(lines[6]["sha256"], blob_sha256("single.bin", single));
    assert_eq!(lines[7]["size"], blocks);
    assert_eq!(lines[7]["sha256"], blob_sha256("blocks.bin", blocks));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_deny_reaches_the_sdk_as_a_service_error_and_nothing_changes() {
    let azurite = Azurite::start();
    let gw = gateway(&azurite, r#"["deny-operations"]"#).await;
    let lines = sdk(
        &gw,
        &[
            "create-container:kept".into(),
            "set-acl:kept".into(),
            "delete-container:kept".into(),
            "list-containers".into(),
        ],
    )
    .await;
    assert_ok(&lines[0]);
    for (line, operation) in [
        (&lines[1], "SetContainerAcl"),
        (&lines[2], "DeleteContainer"),
    ] {
        assert_eq!(line["ok"], false, "{line}");
        assert_eq!(line["status"], 403, "{line}");
        assert_eq!(line["error_code"], "OperationDenied", "{line}");
        let message = line["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{operation} is denied by policy")),
            "{message}"
        );
        assert!(message.contains("request id"), "{message}");
    }
    assert_eq!(
        lines[3]["names"],
        serde_json::json!(["kept"]),
        "the denied delete never reached Azurite"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_uses_the_sdk_with_its_own_token_and_the_gateway_signs_for_it() {
    let azurite = Azurite::start();
    let idp_dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(idp_dir.path());
    let idp = Idp::start(&certs, SigningKey::rsa("k1")).await;
    let audience = "https://storage.azure.com";
    let config = format!(
        r#"
{}
[[route]]
name = "blob"
kind = "azure-storage"
path_prefix = "/{ACCOUNT}"
path_style = true
upstream = "{}"
credential = {{ type = "azure-shared-key", account = "{ACCOUNT}", key_file = "account-key" }}
[[route.access]]
name = "agents"
roles = ["Storage.Agent"]
"#,
        provider_toml("agents", &idp.issuer(), audience, ""),
        azurite.endpoint()
    );
    let mut claims = idp.claims(audience, "agent-7");
    claims["roles"] = serde_json::json!(["Storage.Agent"]);
    let agent = idp.mint(&claims);
    claims["roles"] = serde_json::json!(["Storage.Reader"]);
    let reader = idp.mint(&claims);
    let ca = certs.ca.clone();
    let gw = TestGateway::start(&config, |dir| {
        std::fs::write(dir.join("account-key"), format!("{KEY}\n")).unwrap();
        std::fs::copy(&ca, dir.join("idp-ca.pem")).unwrap();
    })
    .await;
    let token_file = |name: &str, token: &str| {
        let path = gw.dir.path().join(name);
        std::fs::write(&path, token).unwrap();
        vec!["--token-file".to_string(), path.display().to_string()]
    };

    let lines = sdk_with(
        &gw,
        &token_file("agent.jwt", &agent),
        &[
            "create-container:mine".into(),
            "upload:mine/a.txt:1000".into(),
            "list-blobs:mine".into(),
            "download:mine/a.txt".into(),
        ],
    )
    .await;
    for line in &lines {
        assert_ok(line);
    }
    assert_eq!(lines[2]["names"], serde_json::json!(["a.txt"]));
    assert_eq!(lines[3]["sha256"], blob_sha256("a.txt", 1000));

    // No token: the SDK surfaces Azure's own code for it.
    let anonymous = sdk(&gw, &["list-containers".into()]).await;
    assert_eq!(anonymous[0]["status"], 401, "{}", anonymous[0]);
    assert_eq!(anonymous[0]["error_code"], "NoAuthenticationInformation");
    // A verified caller no rule admits.
    let refused = sdk_with(
        &gw,
        &token_file("reader.jwt", &reader),
        &["list-containers".into()],
    )
    .await;
    assert_eq!(refused[0]["status"], 403, "{}", refused[0]);
    assert_eq!(refused[0]["error_code"], "AuthorizationPermissionMismatch");
}
