//! Plugins on an async runtime, where the request path calls them: loading compiles on the
//! blocking pool, and calls from async tasks on either runtime flavour work, including guests
//! that use WASI stdio and filesystem calls (the sync WASI flavour panicked here).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
use portcullis::plugin::{Held, RequestVerdict, load_set};
use portcullis_tests::{engine, headers, request, settings, spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_loads_off_the_reactor_and_its_plugins_answer_from_async_tasks() {
    let specs = vec![
        spec("allow-all", settings(), serde_json::json!({})),
        spec("misbehave", settings(), serde_json::json!({})),
    ];
    let set = load_set(&engine(), &specs, 7).await.unwrap();
    assert_eq!(set.generation(), 7);
    let misbehave = set.get("misbehave").unwrap().clone();
    let mut tasks = Vec::new();
    for (i, mode) in ["stdout-flood", "probe", "none", "trap"]
        .into_iter()
        .enumerate()
    {
        let plugin = misbehave.clone();
        tasks.push(tokio::spawn(async move {
            let h = headers(&[("x-misbehave", mode)]);
            plugin
                .on_request(
                    &mut Held::default(),
                    &request(&format!("r{i}"), "GET", "/"),
                    &h,
                )
                .await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert!(
        matches!(results[0], Ok(RequestVerdict::Allow)),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(&results[1], Ok(RequestVerdict::Deny(d)) if d.code == "probe"),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Ok(RequestVerdict::Allow)),
        "{:?}",
        results[2]
    );
    assert!(results[3].is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn calls_from_a_current_thread_runtime_do_not_panic() {
    let specs = vec![spec("misbehave", settings(), serde_json::json!({}))];
    let set = load_set(&engine(), &specs, 1).await.unwrap();
    let plugin = set.get("misbehave").unwrap();
    for mode in ["stdout-flood", "probe", "log-flood"] {
        plugin
            .on_request(
                &mut Held::default(),
                &request("r", "GET", "/"),
                &headers(&[("x-misbehave", mode)]),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_background_load_reports_every_error() {
    let specs = vec![
        spec("bad-describe", settings(), serde_json::json!({})),
        spec(
            "misbehave",
            settings(),
            serde_json::json!({"mode": "reject-config"}),
        ),
    ];
    let errors = load_set(&engine(), &specs, 2).await.unwrap_err();
    assert_eq!(errors.len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn a_looping_plugin_yields_so_other_tasks_keep_running() {
    let specs = vec![spec("misbehave", settings(), serde_json::json!({}))];
    let set = load_set(&engine(), &specs, 1).await.unwrap();
    let plugin = set.get("misbehave").unwrap();
    let ticks = std::sync::atomic::AtomicU32::new(0);
    let h = headers(&[("x-misbehave", "loop")]);
    let req = request("r", "GET", "/");
    let mut held = Held::default();
    let call = plugin.on_request(&mut held, &req, &h);
    let ticker = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    // One thread runs both: the ticker advances only if the looping guest yields.
    let result = tokio::select! {
        r = call => r,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    assert!(
        matches!(result, Err(portcullis::plugin::PluginError::Timeout { .. })),
        "{result:?}"
    );
    assert!(
        ticks.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the runtime was blocked"
    );
}
