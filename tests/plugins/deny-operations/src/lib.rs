//! Test plugin that denies the operations listed in its config (`{"operations": ["DeleteContainer"]}`)
//! with 403 and code `OperationDenied`, and allows everything else: proves that the operation
//! the host derives reaches plugins, and that a deny reaches the client's SDK.
use portcullis_sdk::host;
use portcullis_sdk::{Descriptor, Headers, Phases, Plugin, Request, RequestVerdict};

struct DenyOperations;

fn operations(config: &str) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("config is not JSON: {e}"))?;
    match value.get("operations") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "`operations` must list strings".to_string())
            })
            .collect(),
        _ => Err("`operations` (a list of operation names) is required".to_string()),
    }
}

impl Plugin for DenyOperations {
    fn describe() -> Descriptor {
        Descriptor::new(
            "deny-operations",
            env!("CARGO_PKG_VERSION"),
            Phases::REQUEST_HEADERS,
        )
    }

    fn configure(config: &str) -> Result<(), String> {
        operations(config).map(|_| ())
    }

    fn on_request(req: &Request, _headers: &Headers) -> RequestVerdict {
        match operations(&host::config()) {
            Ok(denied) if denied.contains(&req.operation) => RequestVerdict::deny(
                403,
                "OperationDenied",
                &format!("{} is denied by policy", req.operation),
            ),
            Ok(_) => RequestVerdict::Allow,
            Err(e) => RequestVerdict::deny(500, "deny-operations-config", &e),
        }
    }
}

portcullis_sdk::export_plugin!(DenyOperations);
