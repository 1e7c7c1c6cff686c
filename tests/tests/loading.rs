//! Loading plugins: bad files are rejected with a clear message naming the file or plugin;
//! describe and configure errors name the plugin; the example configuration loads.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
use std::path::Path;

use portcullis::plugin::{
    EngineSettings, Held, InstanceMode, PluginEngine, PluginError, PluginSettings, PluginSpec,
    load_plugin, load_set,
};
use portcullis_tests::{engine, load, plugin, root, settings, spec};
use sha2::Digest;

/// Load `bytes` written to a temporary file as plugin `name`.
async fn load_bytes(name: &str, bytes: &[u8]) -> Result<(), PluginError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&file, bytes).unwrap();
    let spec = PluginSpec {
        alias: None,
        name: name.to_string(),
        file,
        config: serde_json::json!({}),
        settings: settings(),
    };
    load_plugin(&engine(), &spec).await.map(|_| ())
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("test WAT parses")
}

#[tokio::test]
async fn a_file_that_is_not_wasm_is_rejected() {
    let e = load_bytes("text", b"this is not a component, it is text")
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("text.wasm"), "{e}");
    assert!(e.to_string().contains("not a WebAssembly file"), "{e}");
}

#[tokio::test]
async fn a_core_module_is_rejected_with_how_to_fix_it() {
    let e = load_bytes("core", &wat("(module)")).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("core WebAssembly module, not a component"),
        "{e}"
    );
}

#[tokio::test]
async fn a_truncated_component_is_rejected() {
    let bytes = std::fs::read(plugin("allow-all")).unwrap();
    let e = load_bytes("allow-all", &bytes[..bytes.len() / 2])
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::Invalid { .. }), "{e}");
}

#[tokio::test]
async fn a_component_with_no_exports_is_rejected() {
    let e = load_bytes("empty", &wat("(component)")).await.unwrap_err();
    assert!(matches!(e, PluginError::Contract { .. }), "{e}");
    assert!(e.to_string().contains("exports nothing"), "{e}");
}

#[tokio::test]
async fn a_component_built_for_another_contract_version_is_rejected_naming_both() {
    let bytes = wat(r#"(component
        (instance $plugin)
        (export "portcullis:policy/plugin@0.1.0" (instance $plugin)))"#);
    let e = load_bytes("old", &bytes).await.unwrap_err();
    let PluginError::ContractVersion { found, .. } = &e else {
        panic!("expected a contract version error, got {e}");
    };
    assert_eq!(found, "portcullis:policy@0.1.0");
    assert!(
        e.to_string()
            .contains("this gateway speaks portcullis:policy@0.2.0"),
        "{e}"
    );
}

#[tokio::test]
async fn a_component_exporting_the_wrong_shape_is_rejected() {
    let bytes = wat(r#"(component
        (instance $plugin)
        (export "portcullis:policy/plugin@0.2.0" (instance $plugin)))"#);
    let e = load_bytes("hollow", &bytes).await.unwrap_err();
    assert!(matches!(e, PluginError::Contract { .. }), "{e}");
}

#[tokio::test]
async fn a_component_importing_what_the_sandbox_lacks_is_rejected() {
    let bytes = wat(r#"(component
        (import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func))))
        (instance $plugin)
        (export "portcullis:policy/plugin@0.2.0" (instance $plugin)))"#);
    let e = load_bytes("network", &bytes).await.unwrap_err();
    assert!(matches!(e, PluginError::Link { .. }), "{e}");
    assert!(e.to_string().contains("wasi:http/outgoing-handler"), "{e}");
}

#[tokio::test]
async fn a_bad_descriptor_is_reported_with_the_file_and_every_problem() {
    let e = load_plugin(
        &engine(),
        &spec("bad-describe", settings(), serde_json::json!({})),
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, PluginError::Describe { .. }), "{text}");
    assert!(text.starts_with("plugin bad-describe ("), "{text}");
    assert!(text.contains("bad-describe.wasm, sha256:"), "{text}");
    assert!(
        text.contains("pattern 1 \"(unclosed\" does not compile"),
        "{text}"
    );
}

#[tokio::test]
async fn a_name_that_differs_from_the_configuration_is_rejected() {
    let mut s = spec("allow-all", settings(), serde_json::json!({}));
    s.name = "deny-all".into();
    let e = load_plugin(&engine(), &s).await.unwrap_err();
    assert!(
        e.to_string().contains(
            "declares the name \"allow-all\" but the configuration loads it as \"deny-all\""
        ),
        "{e}"
    );
}

#[tokio::test]
async fn configure_errors_name_the_plugin_and_carry_its_message() {
    let s = spec(
        "misbehave",
        settings(),
        serde_json::json!({"mode": "reject-config"}),
    );
    let e = load_plugin(&engine(), &s).await.unwrap_err();
    let PluginError::Configure { plugin, reason } = &e else {
        panic!("expected a configure error, got {e}");
    };
    assert_eq!(plugin.name, "misbehave");
    assert_eq!(reason, "mode `reject-config` refuses every configuration");
    assert!(
        e.to_string().starts_with("plugin misbehave@0.1.0 (sha256:"),
        "{e}"
    );
}

#[tokio::test]
async fn a_missing_file_is_reported_with_its_path() {
    let s = PluginSpec {
        file: root().join("target/plugins/does-not-exist.wasm"),
        ..spec("allow-all", settings(), serde_json::json!({}))
    };
    let e = load_plugin(&engine(), &s).await.unwrap_err();
    assert!(e.to_string().contains("does-not-exist.wasm"), "{e}");
}

#[tokio::test]
async fn a_set_reports_every_failure_not_just_the_first() {
    let specs = vec![
        spec("allow-all", settings(), serde_json::json!({})),
        spec("bad-describe", settings(), serde_json::json!({})),
        spec(
            "misbehave",
            settings(),
            serde_json::json!({"mode": "reject-config"}),
        ),
    ];
    let errors = load_set(&engine(), &specs, 1).await.unwrap_err();
    assert_eq!(errors.len(), 2);
}

#[tokio::test]
async fn plugins_are_identified_by_name_version_and_sha256() {
    let p = load(&engine(), "deny-all", settings()).await;
    let digest = hex::encode(sha2::Sha256::digest(
        std::fs::read(plugin("deny-all")).unwrap(),
    ));
    assert_eq!(p.id().name, "deny-all");
    assert_eq!(p.id().version, "0.1.0");
    assert_eq!(p.id().sha256, digest);
}

#[tokio::test]
async fn pool_exhaustion_is_a_capacity_error_not_a_crash() {
    let engine = PluginEngine::new(EngineSettings {
        max_instances: 1,
        max_memory: 64 << 20,
        cache_dir: None,
    })
    .unwrap();
    // A reused instance stays alive between calls and holds the only slot.
    let reuse = PluginSettings {
        instance: InstanceMode::Reuse { calls: 100 },
        ..settings()
    };
    let holder = load(&engine, "allow-all", reuse).await;
    let h = portcullis_tests::headers(&[]);
    let req = portcullis_tests::request("r", "GET", "/");
    holder
        .on_request(&mut Held::default(), &req, &h)
        .await
        .unwrap();
    let other = load_plugin(
        &engine,
        &spec("deny-all", settings(), serde_json::json!({})),
    )
    .await;
    let e = other.unwrap_err();
    assert!(e.to_string().contains("no instance available"), "{e}");
}

#[tokio::test]
async fn instances_kept_between_a_requests_hooks_never_take_more_than_half_the_pool() {
    let engine = PluginEngine::new(EngineSettings {
        max_instances: 2,
        max_memory: 64 << 20,
        cache_dir: None,
    })
    .unwrap();
    // misbehave declares response phases, so a request keeps its instance when it may.
    let p = load(&engine, "misbehave", settings()).await;
    let h = portcullis_tests::headers(&[]);
    let mut requests: Vec<Held> = (0..3).map(|_| Held::default()).collect();
    for (i, held) in requests.iter_mut().enumerate() {
        let req = portcullis_tests::request(&format!("r{i}"), "GET", "/");
        p.on_request(held, &req, &h)
            .await
            .unwrap_or_else(|e| panic!("request {i} found no instance: {e}"));
    }
    let kept: Vec<String> = requests.iter().map(|h| format!("{h:?}")).collect();
    assert_eq!(kept, ["Held(instance)", "Held(none)", "Held(none)"]);
    // When the first request ends, its slot returns and the next request may keep one.
    requests.clear();
    let mut held = Held::default();
    p.on_request(&mut held, &portcullis_tests::request("r3", "GET", "/"), &h)
        .await
        .unwrap();
    assert_eq!(format!("{held:?}"), "Held(instance)");
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk_by_sha256() {
    let cache = tempfile::tempdir().unwrap();
    let settings_with_cache = || EngineSettings {
        max_instances: 8,
        max_memory: 64 << 20,
        cache_dir: Some(cache.path().to_path_buf()),
    };
    let first = PluginEngine::new(settings_with_cache()).unwrap();
    let p = load(&first, "allow-all", settings()).await;
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].starts_with(&p.id().sha256), "{cached:?}");
    // A new engine (a restart) loads the artifact and it works.
    let second = PluginEngine::new(settings_with_cache()).unwrap();
    let again = load(&second, "allow-all", settings()).await;
    let verdict = again
        .on_request(
            &mut Held::default(),
            &portcullis_tests::request("r", "GET", "/"),
            &portcullis_tests::headers(&[]),
        )
        .await
        .unwrap();
    assert!(matches!(verdict, portcullis::plugin::RequestVerdict::Allow));
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_ignored_and_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let engine = || {
        PluginEngine::new(EngineSettings {
            max_instances: 8,
            max_memory: 64 << 20,
            cache_dir: Some(cache.path().to_path_buf()),
        })
        .unwrap()
    };
    load(&engine(), "allow-all", settings()).await;
    let entry = std::fs::read_dir(cache.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&entry, b"garbage").unwrap();
    load(&engine(), "allow-all", settings()).await;
    assert!(
        std::fs::metadata(&entry).unwrap().len() > 7,
        "rewritten with a real artifact"
    );
}

#[tokio::test]
async fn the_example_configuration_loads_every_plugin() {
    portcullis_tests::example_audit_key();
    let path = root().join("examples/portcullis.toml");
    let report = portcullis::check::check(&path).await;
    assert!(report.passed(), "{}", report.render(&path));
    let digest =
        |name: &str| hex::encode(sha2::Sha256::digest(std::fs::read(plugin(name)).unwrap()));
    let text = report.render(Path::new("examples/portcullis.toml"));
    assert!(
        text.contains(" alias:read-only"),
        "the aliased plugin is missing from:\n{text}"
    );
    for name in [
        "plugin-template",
        "allow-all",
        "plugin-template-python",
        "mask",
        "guard",
    ] {
        assert!(
            text.contains(&format!("plugin {name} 0.1.0 sha256:{}", digest(name))),
            "{name} missing from:\n{text}"
        );
    }
    for route in [
        "route example-api (generic) */ -> http://127.0.0.1:8081 plugins:[plugin-template,allow-all] \
         identity:[dev] access:[agents->[plugin-template,hold-deletes,mask] auditors->[read-only]]",
        "route example-blob (azure-storage) */devstoreaccount1 -> http://127.0.0.1:10000 \
         plugins:[allow-all] identity:[*] access:[agents->[allow-all]]",
    ] {
        assert!(text.contains(route), "{route} missing from:\n{text}");
    }
}

#[tokio::test]
async fn check_reads_certificates_and_secrets_as_serve_would() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("server.key"), "not a key").unwrap();
    std::fs::write(dir.path().join("account-key"), "").unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        r#"
plugin_dir = "."
[server]
tls = { cert_file = "server.pem", key_file = "server.key" }
[[route]]
authentication = "none"
name = "blob"
kind = "azure-storage"
upstream = "http://127.0.0.1:10000"
credential = { type = "azure-shared-key", account = "a", key_file = "account-key" }
"#,
    )
    .unwrap();
    let report = portcullis::check::check(&config).await;
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("route[0] (blob): "),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems[0].contains("account-key"),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems[1].starts_with("server.tls: "),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems[1].contains("server.pem"),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn check_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("bad-describe"), dir.path().join("bad-describe.wasm")).unwrap();
    std::fs::copy(plugin("misbehave"), dir.path().join("misbehave.wasm")).unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        r#"
plugin_dir = "."
server = { plaintext = true }
[[plugin]]
name = "bad-describe"
file = "bad-describe.wasm"
[[plugin]]
name = "misbehave"
file = "misbehave.wasm"
config = { mode = "reject-config" }
"#,
    )
    .unwrap();
    let report = portcullis::check::check(&config).await;
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("plugin[0]: plugin "),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems[1].contains("refuses every configuration"),
        "{:?}",
        report.problems
    );
}
