//! Copy-me template: refuse some methods on some paths, configured by the operator.
//!
//! Operator configuration (JSON, from the gateway's TOML):
//! ```json
//! {"blocked_methods": ["DELETE"], "paths": ["/admin/**", "/items/{id}"]}
//! ```
//! The decision lives in [`decide`], a plain function tested natively with `cargo test`;
//! the hooks only gather inputs from the host and call it.
use portcullis_sdk::matching::path_template;
use portcullis_sdk::{Descriptor, Headers, Phases, Plugin, Request, RequestVerdict, host};
use serde::Deserialize;

/// The operator's configuration.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Methods to refuse (upper case).
    #[serde(default)]
    blocked_methods: Vec<String>,
    /// Path templates the refusal applies to; empty means every path.
    #[serde(default)]
    paths: Vec<String>,
}

fn parse_config(json: &str) -> Result<Config, String> {
    let config: Config = serde_json::from_str(json).map_err(|e| format!("invalid config: {e}"))?;
    if let Some(m) = config
        .blocked_methods
        .iter()
        .find(|m| m.to_ascii_uppercase() != **m)
    {
        return Err(format!("blocked_methods: `{m}` must be upper case"));
    }
    Ok(config)
}

/// The policy: `Some(reason)` to refuse.
fn decide(config: &Config, method: &str, path: &str) -> Option<String> {
    let blocked = config.blocked_methods.iter().any(|m| m == method);
    let on_path = config.paths.is_empty()
        || config
            .paths
            .iter()
            .any(|t| path_template(t, path).is_some());
    (blocked && on_path).then(|| format!("{method} is not allowed on {path}"))
}

struct Template;

impl Plugin for Template {
    fn describe() -> Descriptor {
        Descriptor::new("plugin-template", env!("CARGO_PKG_VERSION"), Phases::REQUEST_HEADERS)
            .with_config_schema(
                r#"{"type":"object","properties":{"blocked_methods":{"type":"array","items":{"type":"string"}},"paths":{"type":"array","items":{"type":"string"}}},"additionalProperties":false}"#,
            )
    }

    fn configure(config: &str) -> Result<(), String> {
        parse_config(config).map(|_| ())
    }

    fn on_request(req: &Request, _headers: &Headers) -> RequestVerdict {
        // The guest is stateless: read the (already validated) config on each call.
        let config = match parse_config(&host::config()) {
            Ok(c) => c,
            Err(e) => return RequestVerdict::deny(500, "template-config", &e),
        };
        match decide(&config, &req.method, &req.path_and_query) {
            Some(reason) => RequestVerdict::deny(403, "template-blocked-method", &reason),
            None => RequestVerdict::Allow,
        }
    }
}

portcullis_sdk::export_plugin!(Template);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_method_on_listed_path_is_refused() {
        let c = parse_config(r#"{"blocked_methods":["DELETE"],"paths":["/admin/**"]}"#).unwrap();
        assert!(decide(&c, "DELETE", "/admin/users/1").is_some());
        assert!(decide(&c, "DELETE", "/public/1").is_none());
        assert!(decide(&c, "GET", "/admin/users/1").is_none());
    }

    #[test]
    fn no_paths_means_every_path() {
        let c = parse_config(r#"{"blocked_methods":["POST"]}"#).unwrap();
        assert!(decide(&c, "POST", "/anything?x=1").is_some());
    }

    #[test]
    fn bad_config_is_refused_with_its_reason() {
        assert!(
            parse_config(r#"{"blocked_methods":["delete"]}"#)
                .unwrap_err()
                .contains("upper case")
        );
        assert!(
            parse_config(r#"{"colour":"red"}"#)
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
