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
    EngineSettings, Held, InstanceMode, Plugin, PluginEngine, PluginSet, PluginSettings,
    PluginSpec, Principal, Request, RequestDecision, RequestVerdict, ResponseVerdict, load_plugin,
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
        alias: None,
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
    // The same length with plugins built the default way (no WASI; `misbehave` is a wasip2
    // build, to probe the WASI sandbox): what a chain of first-party-style plugins costs.
    let core_chain = set
        .chain(&["allow-all", "plugin-template", "deny-operations"])
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
            let v = reuse
                .on_request(&mut Held::default(), black_box(&req), &h)
                .await
                .unwrap();
            assert!(matches!(v, RequestVerdict::Allow));
        })
    });
    g.bench_function("allow_all_fresh", |b| {
        b.to_async(rt).iter(|| async {
            let v = fresh
                .on_request(&mut Held::default(), black_box(&req), &h)
                .await
                .unwrap();
            assert!(matches!(v, RequestVerdict::Allow));
        })
    });
    // One request through both hooks `allow-all` declares: its instance kept between them (the
    // default), and, for the ratio, an instance per hook (as before 2026-11-30).
    g.bench_function("allow_all_request_and_response_fresh", |b| {
        b.to_async(rt).iter(|| async {
            let mut held = Held::default();
            let v = fresh.on_request(&mut held, black_box(&req), &h).await;
            assert!(matches!(v, Ok(RequestVerdict::Allow)));
            let v = fresh.on_response(&mut held, &req, 200, &h).await;
            assert!(matches!(v, Ok(ResponseVerdict::Pass)));
        })
    });
    g.bench_function("allow_all_request_and_response_fresh_per_hook", |b| {
        b.to_async(rt).iter(|| async {
            let v = fresh
                .on_request(&mut Held::default(), black_box(&req), &h)
                .await;
            assert!(matches!(v, Ok(RequestVerdict::Allow)));
            let v = fresh.on_response(&mut Held::default(), &req, 200, &h).await;
            assert!(matches!(v, Ok(ResponseVerdict::Pass)));
        })
    });
    // The load benchmark's 3-plugin route: 5 hooks per request (`allow-all` and `misbehave`
    // declare the response phase), 3 instances.
    g.bench_function("chain_of_3_request_and_response_fresh", |b| {
        b.to_async(rt).iter(|| async {
            let mut exchange = chain.begin();
            let out = exchange.on_request(black_box(&req), &h).await.unwrap();
            assert!(matches!(out.decision, RequestDecision::Continue));
            let out = exchange.on_response(&req, 200, &h).await.unwrap();
            assert_eq!(out.trace.len(), 2);
        })
    });
    g.bench_function("chain_of_3_request_and_response_fresh_per_hook", |b| {
        b.to_async(rt).iter(|| async {
            let out = chain.begin().on_request(black_box(&req), &h).await.unwrap();
            assert!(matches!(out.decision, RequestDecision::Continue));
            let out = chain.begin().on_response(&req, 200, &h).await.unwrap();
            assert_eq!(out.trace.len(), 2);
        })
    });
    for (name, chain) in [
        ("chain_of_3_fresh", &chain),
        ("chain_of_3_core_fresh", &core_chain),
    ] {
        g.bench_function(name, |b| {
            b.to_async(rt).iter(|| async {
                let out = chain.begin().on_request(black_box(&req), &h).await.unwrap();
                assert_eq!(out.trace.len(), 3);
                assert!(matches!(out.decision, RequestDecision::Continue));
            })
        });
    }
    g.finish();

    guard(c, rt, &engine, &fresh, &req, &h);
    floor(c, rt);
}

/// The `guard` plugin's cost per request with 1 and with 100 rules, next to `allow-all` (the
/// same fresh-instance cost with no decision) in the same run. The request is an ARM read: the
/// 99 deny rules before the final allow rule are each tried and miss, the worst case.
fn guard(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    engine: &PluginEngine,
    allow_all: &Arc<Plugin>,
    req: &Request,
    h: &Arc<http::HeaderMap>,
) {
    let rules = |n: usize| {
        let mut rules: Vec<serde_json::Value> = (0..n - 1)
            .map(|i| {
                serde_json::json!({
                    "id": format!("deny-{i}"),
                    "operations": [format!("Microsoft.Provider{i}/things/*/delete")],
                    "paths": [format!("/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.Provider{i}/**")],
                    "principal": {"roles": ["agent"]},
                    "action": "deny",
                })
            })
            .collect();
        rules.push(
            serde_json::json!({"id": "allow-reads", "operations": ["*/read"], "action": "allow"}),
        );
        serde_json::json!({"default": "deny", "rules": rules})
    };
    let one = rt
        .block_on(load_plugin(
            engine,
            &spec("guard", InstanceMode::Fresh, rules(1)),
        ))
        .unwrap();
    let hundred = rt
        .block_on(load_plugin(
            engine,
            &spec("guard", InstanceMode::Fresh, rules(100)),
        ))
        .unwrap();
    let reused = InstanceMode::Reuse { calls: u32::MAX };
    let hundred_reused = rt
        .block_on(load_plugin(engine, &spec("guard", reused, rules(100))))
        .unwrap();
    let mut g = c.benchmark_group("guard");
    for (name, plugin) in [
        ("allow_all_fresh", allow_all),
        ("guard_1_rule_fresh", &one),
        ("guard_100_rules_fresh", &hundred),
        ("guard_100_rules_reuse", &hundred_reused),
    ] {
        g.bench_function(name, |b| {
            b.to_async(rt).iter(|| async {
                let v = plugin
                    .on_request(&mut Held::default(), black_box(req), h)
                    .await
                    .unwrap();
                assert!(matches!(v, RequestVerdict::Allow));
            })
        });
    }
    g.finish();
}

/// The engine's floor on this machine: instantiate + call + drop of the smallest possible
/// component (one core function returning a constant, no imports, no memory) on a pooling
/// engine configured like the gateway's, called synchronously and asynchronously. The gap
/// between this and `allow_all_fresh` is the cost of a real plugin (memory image, WASI
/// context, bindings, the request record).
fn floor(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use wasmtime::component::{Component, Linker};
    use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
    let mut pool = PoolingAllocationConfig::new();
    pool.pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(
        &engine,
        wat::parse_str(
            r#"(component
            (core module $m (func (export "f") (result i32) i32.const 1))
            (core instance $i (instantiate $m))
            (func (export "f") (result u32) (canon lift (core func $i "f"))))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let pre = Linker::<()>::new(&engine)
        .instantiate_pre(&component)
        .unwrap();
    let mut g = c.benchmark_group("engine");
    g.bench_function("minimal_component_fresh_sync", |b| {
        b.iter(|| {
            let mut store = Store::new(&engine, ());
            store.set_epoch_deadline(1000);
            let instance = pre.instantiate(&mut store).unwrap();
            let f = instance
                .get_typed_func::<(), (u32,)>(&mut store, "f")
                .unwrap();
            assert_eq!(f.call(&mut store, ()).unwrap(), (1,));
        })
    });
    g.bench_function("minimal_component_fresh_async", |b| {
        b.to_async(rt).iter(|| async {
            let mut store = Store::new(&engine, ());
            store.set_epoch_deadline(1000);
            let instance = pre.instantiate_async(&mut store).await.unwrap();
            let f = instance
                .get_typed_func::<(), (u32,)>(&mut store, "f")
                .unwrap();
            assert_eq!(f.call_async(&mut store, ()).await.unwrap(), (1,));
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
        load_plugin(
            engine,
            &spec(
                "deny-operations",
                InstanceMode::Fresh,
                serde_json::json!({"operations": ["Microsoft.Resources/subscriptions/resourceGroups/delete"]}),
            ),
        )
        .await
        .unwrap(),
    ];
    (fresh, reuse, PluginSet::new(chain_plugins, 1))
}

criterion_group!(benches, bench);
criterion_main!(benches);
