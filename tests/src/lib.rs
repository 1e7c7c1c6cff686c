//! The end-to-end harness for Portcullis: fixtures shared by the suites in `tests/`.
//!
//! Plugins used by tests are built from source by `scripts/build-plugins.sh` into
//! `target/plugins/`; a missing one fails the test loudly, never skips it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
pub mod azurite;
pub mod browser;
pub mod gateway;
pub mod logs;
pub mod mock_upstream;
pub mod oidc;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portcullis::plugin::{
    EngineSettings, Plugin, PluginEngine, PluginError, PluginSettings, PluginSpec, Principal,
    Request,
};

/// Every record line of the audit log in `dir` (whole lines only; a torn tail is left out).
pub fn audit_records(dir: &std::path::Path) -> Vec<portcullis_audit::record::Record> {
    let mut out = Vec::new();
    for (_, path) in portcullis_audit::segment::list(dir).unwrap_or_default() {
        let bytes = std::fs::read(path).unwrap();
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            if let Some(line) = line.strip_suffix(b"\n") {
                out.push(portcullis_audit::record::Record::parse(line).unwrap());
            }
        }
    }
    out
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The example configuration's audit signing key (`target/example/audit.key`), made on first
/// use as `scripts/run.sh` makes it.
pub fn example_audit_key() {
    let dir = root().join("target/example");
    if dir.join("audit.key").is_file() {
        return;
    }
    std::fs::create_dir_all(&dir).expect("target/example");
    let key = portcullis_audit::note::SigningKey::generate("portcullis.example/quickstart")
        .expect("a key");
    // Another test process may win the race; its key is as good.
    if let Err(e) = key.write(&dir.join("audit.key"), &dir.join("audit.pub")) {
        assert!(
            dir.join("audit.key").is_file(),
            "cannot write the example key: {e}"
        );
    }
}

/// The built component of a plugin crate, e.g. `plugin("misbehave")`.
///
/// Panics (failing the test) when it has not been built.
pub fn plugin(name: &str) -> PathBuf {
    let path = root().join("target/plugins").join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "test plugin {} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

/// An engine sized for tests.
pub fn engine() -> PluginEngine {
    PluginEngine::new(EngineSettings {
        max_instances: 64,
        max_memory: 64 << 20,
        cache_dir: None,
    })
    .expect("engine builds")
}

/// Settings with a short deadline and a small memory limit, so misbehaviour ends quickly.
pub fn settings() -> PluginSettings {
    PluginSettings {
        timeout: Duration::from_millis(100),
        memory_limit: 16 << 20,
        ..PluginSettings::default()
    }
}

/// What to load: plugin `name` with these settings and this configuration.
pub fn spec(name: &str, settings: PluginSettings, config: serde_json::Value) -> PluginSpec {
    PluginSpec {
        alias: None,
        name: name.to_string(),
        file: plugin(name),
        config,
        settings,
    }
}

/// Load plugin `name`, panicking with the error if it does not load.
pub async fn load(engine: &PluginEngine, name: &str, settings: PluginSettings) -> Arc<Plugin> {
    portcullis::plugin::load_plugin(engine, &spec(name, settings, serde_json::json!({})))
        .await
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"))
}

/// Request facts for a test request.
pub fn request(id: &str, method: &str, path: &str) -> Request {
    Request {
        id: id.to_string(),
        method: method.to_string(),
        scheme: "https".to_string(),
        authority: "gateway.test".to_string(),
        path_and_query: path.to_string(),
        route: "test".to_string(),
        operation: format!("{method} {path}"),
        principal: Some(Principal {
            subject: "agent-1".into(),
            issuer: "https://issuer.test".into(),
            tenant: None,
            app_id: Some("app-1".into()),
            roles: vec!["agent".into()],
            groups: vec![],
            groups_complete: true,
            scopes: vec![],
            claims: vec![],
        }),
    }
}

/// A header map from pairs.
pub fn headers(pairs: &[(&str, &str)]) -> Arc<http::HeaderMap> {
    let mut map = http::HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(v).expect("header value"),
        );
    }
    Arc::new(map)
}

/// Await `f`, failing if it has not finished within `limit`: a liveness bound (a hung plugin
/// call must not hang the suite), not a performance assertion.
pub async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

/// The error's text must name the plugin (`name@version (sha256:…)`).
pub fn assert_names_plugin(e: &PluginError, name: &str) {
    let text = e.to_string();
    assert!(
        text.contains(&format!("plugin {name}@")) && text.contains("sha256:"),
        "error does not name plugin {name} and its digest: {text}"
    );
}
