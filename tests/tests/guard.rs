//! The `guard` plugin in a real gateway with the shipped rule sets (`examples/rules/`): Azure
//! Resource Manager requests against a mock upstream, and Azure Blob Storage driven by the
//! real Python SDK against Azurite. Denies arrive in the service's error shape with the rule's
//! id; requests that need approval are refused (403 `ApprovalRequired`: these gateways have
//! no `[approvals]`, tests/tests/approvals.rs has them); nothing refused reaches the upstream.
#![allow(clippy::unwrap_used)]
use bytes::Bytes;
use portcullis_tests::azurite::{ACCOUNT, Azurite, KEY, gateway_args, run_blob_client};
use portcullis_tests::gateway::TestGateway;
use portcullis_tests::mock_upstream::{MockUpstream, Reply};
use serde_json::Value;

fn rule_set(name: &str) -> String {
    std::fs::read_to_string(portcullis_tests::root().join("examples/rules").join(name))
        .unwrap_or_else(|e| panic!("examples/rules/{name}: {e}"))
}

#[tokio::test]
async fn arm_rules_deny_keys_and_group_deletes_hold_privileged_writes_and_allow_reads() {
    portcullis_tests::plugin("guard");
    let upstream = MockUpstream::start(|_| Reply::json(r#"{"id":"x"}"#)).await;
    let config = format!(
        "{}\n[[route]]\nname = \"arm\"\nkind = \"azure-arm\"\nupstream = \"{}\"\n\
         authentication = \"none\"\nplugins = [\"guard-azure-arm\"]\n",
        rule_set("azure-arm.toml"),
        upstream.url()
    );
    let gw = TestGateway::start(&config, |_| {}).await;
    let client = gw.client(true);
    let sub = "/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590";
    let v = "api-version=2022-09-01";
    let cases: [(&str, String, u16, &str); 8] = [
        (
            "DELETE",
            format!("{sub}/resourceGroups/rg-prod?{v}"),
            403,
            "deny-resource-group-delete",
        ),
        // ARM ignores case in paths; so does a deny rule.
        (
            "DELETE",
            format!("{sub}/RESOURCEGROUPS/rg-prod?{v}"),
            403,
            "deny-resource-group-delete",
        ),
        (
            "POST",
            format!(
                "{sub}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa/listKeys?{v}"
            ),
            403,
            "deny-list-keys",
        ),
        (
            "PUT",
            format!(
                "{sub}/providers/Microsoft.Authorization/roleAssignments/5b0c2a6e-0000-4000-8000-000000000001?{v}"
            ),
            403,
            "ApprovalRequired",
        ),
        (
            "DELETE",
            format!("{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1?{v}"),
            403,
            "ApprovalRequired",
        ),
        (
            "PUT",
            format!("{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1?{v}"),
            403,
            "guard-default",
        ),
        (
            "GET",
            format!("{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1?{v}"),
            200,
            "",
        ),
        ("GET", format!("{sub}/resourceGroups?{v}"), 200, ""),
    ];
    for (method, path, status, code) in &cases {
        let answer = client.send(method, path, &[], Bytes::new()).await;
        assert_eq!(answer.status, *status, "{method} {path}: {}", answer.text());
        if *status != 200 {
            let body = answer.json();
            assert_eq!(body["error"]["code"], *code, "{method} {path}: {body}");
            assert!(
                answer.headers.contains_key("x-ms-correlation-request-id"),
                "{method} {path}: ARM error shape"
            );
            if code.starts_with("deny-") {
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains(&format!("(rule {code})")), "{message}");
            }
        }
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "only the reads were forwarded: {seen:?}");
    assert!(seen.iter().all(|s| s.method == "GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_rules_stop_container_deletes_and_acl_changes_and_hold_protected_writes() {
    portcullis_tests::plugin("guard");
    let azurite = Azurite::start();
    let config = format!(
        r#"{}
[[route]]
name = "blob"
kind = "azure-storage"
path_prefix = "/{ACCOUNT}"
path_style = true
upstream = "{}"
authentication = "none"
plugins = ["guard-azure-storage"]
credential = {{ type = "azure-shared-key", account = "{ACCOUNT}", key_file = "account-key" }}
"#,
        rule_set("azure-storage.toml"),
        azurite.endpoint()
    );
    let gw = TestGateway::start(&config, |dir| {
        std::fs::write(dir.join("account-key"), format!("{KEY}\n")).unwrap();
    })
    .await;
    let mut args = gateway_args(&gw);
    args.extend(
        [
            "create-container:work",
            "upload:work/notes.txt:1000",
            "list-blobs:work",
            "download:work/notes.txt",
            "set-acl:work",
            "delete-container:work",
            "upload:protected/payroll.csv:100",
            "list-containers",
        ]
        .map(String::from),
    );
    let lines: Vec<Value> = tokio::task::spawn_blocking(move || run_blob_client(&args))
        .await
        .unwrap();
    for i in [0, 1, 2, 3] {
        assert_eq!(lines[i]["ok"], true, "{}", lines[i]);
    }
    for (i, code) in [
        (4, "deny-acl-change"),
        (5, "deny-delete-container"),
        (6, "ApprovalRequired"),
    ] {
        assert_eq!(lines[i]["ok"], false, "{}", lines[i]);
        assert_eq!(lines[i]["status"], 403, "{}", lines[i]);
        assert_eq!(lines[i]["error_code"], code, "{}", lines[i]);
    }
    assert_eq!(
        lines[7]["names"],
        serde_json::json!(["work"]),
        "nothing refused reached Azurite: {}",
        lines[7]
    );
}
