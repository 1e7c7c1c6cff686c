//! Plugins in other languages run in the same sandbox: a Python component (componentize-py,
//! ~18 MB, importing all of WASI including sockets) loads, validates its configuration, decides
//! like the Rust template, and works in both instance modes.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
use std::sync::OnceLock;
use std::time::Duration;

use portcullis::plugin::{
    EngineSettings, Held, InstanceMode, PluginEngine, PluginError, PluginSettings, RequestVerdict,
    load_plugin,
};
use portcullis_tests::{headers, request, spec};

const NAME: &str = "plugin-template-python";

/// One engine for the suite, so the large component compiles once (the cache is per engine).
fn engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        PluginEngine::new(EngineSettings {
            max_instances: 16,
            max_memory: 256 << 20,
            cache_dir: None,
        })
        .unwrap()
    })
}

fn python(instance: InstanceMode) -> PluginSettings {
    PluginSettings {
        timeout: Duration::from_secs(2),
        memory_limit: 256 << 20,
        instance,
        ..PluginSettings::default()
    }
}

fn config() -> serde_json::Value {
    serde_json::json!({"blocked_methods": ["DELETE"], "paths": ["/admin/"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_template_decides_like_the_rust_one() {
    let s = spec(NAME, python(InstanceMode::Reuse { calls: 100 }), config());
    let plugin = load_plugin(engine(), &s).await.unwrap();
    assert_eq!(plugin.id().name, NAME);
    assert_eq!(plugin.id().version, "0.1.0");
    let h = headers(&[]);
    let verdict = plugin
        .on_request(
            &mut Held::default(),
            &request("r1", "DELETE", "/admin/users/1"),
            &h,
        )
        .await
        .unwrap();
    let RequestVerdict::Deny(deny) = verdict else {
        panic!("DELETE on /admin/ is refused: {verdict:?}");
    };
    assert_eq!(deny.code, "template-blocked-method");
    assert_eq!(deny.reason, "DELETE is not allowed on /admin/users/1");
    for (method, path) in [("GET", "/admin/users/1"), ("DELETE", "/public/1")] {
        let verdict = plugin
            .on_request(&mut Held::default(), &request("r2", method, path), &h)
            .await
            .unwrap();
        assert!(
            matches!(verdict, RequestVerdict::Allow),
            "{method} {path}: {verdict:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_configure_errors_carry_the_plugins_message() {
    let s = spec(
        NAME,
        python(InstanceMode::Fresh),
        serde_json::json!({"colour": "red"}),
    );
    let e = load_plugin(engine(), &s).await.unwrap_err();
    let PluginError::Configure { reason, .. } = &e else {
        panic!("expected a configure error, got {e}");
    };
    assert_eq!(reason, "unknown field(s): colour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_runs_in_fresh_mode_too() {
    let s = spec(NAME, python(InstanceMode::Fresh), config());
    let plugin = load_plugin(engine(), &s).await.unwrap();
    let verdict = plugin
        .on_request(
            &mut Held::default(),
            &request("r", "DELETE", "/admin/x"),
            &headers(&[]),
        )
        .await
        .unwrap();
    assert!(matches!(verdict, RequestVerdict::Deny(_)), "{verdict:?}");
}
