//! Plugin engine cost per call: instantiate + call + drop of a small Rust plugin in fresh
#![allow(clippy::unwrap_used)] // benchmark setup: a failed unwrap is a broken benchmark
//! mode, the same call on a reused instance, a chain of three plugins, and a native Rust
//! function making the same decision as the baseline, all measured in one run.
//!
//! Run: `scripts/build-plugins.sh && cargo bench -p portcullis --bench engine`
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::plugin::{
    EngineSettings, InstanceMode, Plugin, PluginEngine, PluginSet, PluginSettings, PluginSpec,
    Principal, Request, RequestVerdict, load_plugin,
};

fn plugin_file(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

fn spec(name: &str, instance: InstanceMode, config: serde_json::Value) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        file: plugin_file(name),
        config,
        settings: PluginSettings {
            instance,
            ..PluginSettings::default()
        },
    }
}

fn request() -> Request {
    Request {
        id: "0af7651916cd43dd8448eb211c80319c".into(),
        method: "GET".into(),
        scheme: "https".into(),
        authority: "management.azure.com".into(),
        path_and_query: "/subscriptions/s1/resourceGroups/rg1?api-version=2021-04-01".into(),
        route: "arm".into(),
        operation: "Microsoft.Resources/subscriptions/resourceGroups/read".into(),
        principal: Some(Principal {
            subject: "agent-1".into(),
            issuer: "https://login.microsoftonline.com/t1/v2.0".into(),
            tenant: Some("t1".into()),
            app_id: Some("app-1".into()),
            roles: vec!["agent".into()],
            groups: vec![],
            groups_complete: true,
            scopes: vec![],
            claims: vec![],
        }),
    }
}

fn headers() -> Arc<http::HeaderMap> {
    let mut h = http::HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("x-ms-version", "2021-08-06".parse().unwrap());
    Arc::new(h)
}

/// The native baseline: the template plugin's decision written as a plain Rust function.
fn native_decision(req: &Request, blocked: &[&str]) -> bool {
    blocked.iter().any(|m| *m == req.method)
}

fn bench(c: &mut Criterion) {
    // The gateway's runtime flavour; plugin calls are async.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let engine = PluginEngine::new(EngineSettings::default()).expect("engine");
    let (fresh, reuse, set) = rt.block_on(load(&engine));
    let chain = set
        .chain(&["allow-all", "plugin-template", "misbehave"])
        .unwrap();
    let req = request();
    let h = headers();
    let rt = &rt;
    let mut g = c.benchmark_group("engine");
    g.bench_function("native_baseline", |b| {
        b.iter(|| black_box(native_decision(black_box(&req), &["DELETE"])))
    });
    g.bench_function("allow_all_reuse", |b| {
        b.to_async(rt).iter(|| async {
            let v = reuse.on_request(black_box(&req), &h).await.unwrap();
            assert!(matches!(v, RequestVerdict::Allow));
        })
    });
    g.bench_function("allow_all_fresh", |b| {
        b.to_async(rt).iter(|| async {
            let v = fresh.on_request(black_box(&req), &h).await.unwrap();
            assert!(matches!(v, RequestVerdict::Allow));
        })
    });
    g.bench_function("chain_of_3_fresh", |b| {
        b.to_async(rt).iter(|| async {
            let out = chain.on_request(black_box(&req), &h).await.unwrap();
            assert_eq!(out.trace.len(), 3);
        })
    });
    g.finish();
}

/// Load the plugins: `allow-all` fresh and reused, and a set for the chain of three.
async fn load(engine: &PluginEngine) -> (Arc<Plugin>, Arc<Plugin>, PluginSet) {
    let fresh = load_plugin(
        engine,
        &spec("allow-all", InstanceMode::Fresh, serde_json::json!({})),
    )
    .await
    .unwrap();
    let reuse = load_plugin(
        engine,
        &spec(
            "allow-all",
            InstanceMode::Reuse { calls: u32::MAX },
            serde_json::json!({}),
        ),
    )
    .await
    .unwrap();
    let template_config =
        serde_json::json!({"blocked_methods": ["DELETE"], "paths": ["/admin/**"]});
    let chain_plugins = vec![
        fresh.clone(),
        load_plugin(
            engine,
            &spec("plugin-template", InstanceMode::Fresh, template_config),
        )
        .await
        .unwrap(),
        load_plugin(
            engine,
            &spec("misbehave", InstanceMode::Fresh, serde_json::json!({})),
        )
        .await
        .unwrap(),
    ];
    (fresh, reuse, PluginSet::new(chain_plugins, 1))
}

criterion_group!(benches, bench);
criterion_main!(benches);
