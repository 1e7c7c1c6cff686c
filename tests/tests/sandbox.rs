//! Misbehaving plugins cost one failed call, never the gateway: every misbehaviour fails
//! closed (or open, where configured) within its deadline, and the error names the plugin.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use portcullis::plugin::{
    FailurePolicy, Held, InstanceMode, Plugin, PluginError, PluginSet, RequestDecision,
    RequestVerdict, ResponseDecision, ResponseVerdict, StepResult,
};
use portcullis_tests::{assert_names_plugin, engine, headers, load, request, settings, within};

const LIVENESS: Duration = Duration::from_secs(30);

async fn misbehave() -> Arc<Plugin> {
    load(&engine(), "misbehave", settings()).await
}

/// Call misbehave's request hook in the given mode, bounded in time.
async fn on_request(plugin: &Arc<Plugin>, mode: &str) -> Result<RequestVerdict, PluginError> {
    within(
        LIVENESS,
        plugin.on_request(
            &mut Held::default(),
            &request("r1", "GET", "/x"),
            &headers(&[("x-misbehave", mode)]),
        ),
    )
    .await
}

/// The host is still fine after a failure: the same plugin answers the next call.
async fn assert_still_serves(plugin: &Arc<Plugin>) {
    let verdict = on_request(plugin, "none")
        .await
        .expect("a well-behaved call succeeds");
    assert!(matches!(verdict, RequestVerdict::Allow), "{verdict:?}");
}

#[tokio::test]
async fn trap_fails_the_call_and_names_the_plugin() {
    let p = misbehave().await;
    let e = on_request(&p, "trap").await.unwrap_err();
    assert!(matches!(e, PluginError::Trap { .. }), "{e}");
    assert_names_plugin(&e, "misbehave");
    assert_still_serves(&p).await;
}

#[tokio::test]
async fn panic_fails_the_call_as_a_trap() {
    let p = misbehave().await;
    let e = on_request(&p, "panic").await.unwrap_err();
    assert!(matches!(e, PluginError::Trap { .. }), "{e}");
    assert!(e.to_string().contains("on-request"), "{e}");
    assert_names_plugin(&e, "misbehave");
    assert_still_serves(&p).await;
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_the_deadline() {
    let p = misbehave().await;
    let e = on_request(&p, "loop").await.unwrap_err();
    let PluginError::Timeout { timeout, .. } = &e else {
        panic!("expected a timeout, got {e}");
    };
    assert_eq!(*timeout, Duration::from_millis(100));
    assert_names_plugin(&e, "misbehave");
    assert_still_serves(&p).await;
}

/// Run misbehave's request hook in `mode` while another task on the same (one-thread) runtime
/// blocks the thread for 150 ms, longer than the 100 ms deadline, as soon as the call first
/// yields. Returns the result and how long the call took on the clock.
async fn on_request_while_the_runtime_is_busy(
    plugin: &Arc<Plugin>,
    mode: &str,
) -> (Result<RequestVerdict, PluginError>, Duration) {
    let started = std::time::Instant::now();
    let busy = async {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(150));
    };
    let (result, ()) = tokio::join!(on_request(plugin, mode), busy);
    (result, started.elapsed())
}

#[tokio::test]
async fn time_spent_waiting_for_a_busy_runtime_does_not_count_against_the_deadline() {
    let p = misbehave().await;
    // `slow:20` spins 20 ms: well within its 100 ms, though the call takes longer on the clock.
    let (result, took) = on_request_while_the_runtime_is_busy(&p, "slow:20").await;
    assert!(
        took >= Duration::from_millis(150),
        "the runtime was never busy: {took:?}"
    );
    let verdict = result.expect("a call kept waiting by a busy gateway is not timed out");
    assert!(matches!(verdict, RequestVerdict::Allow), "{verdict:?}");
    // And a guest that runs past its deadline is still stopped on a busy runtime.
    let (result, _) = on_request_while_the_runtime_is_busy(&p, "loop").await;
    let e = result.unwrap_err();
    assert!(matches!(e, PluginError::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn memory_growth_past_the_limit_is_reported_as_such() {
    let p = misbehave().await;
    let e = on_request(&p, "memory").await.unwrap_err();
    let PluginError::Memory { limit, .. } = &e else {
        panic!("expected a memory failure, got {e}");
    };
    assert_eq!(*limit, 16 << 20);
    assert_names_plugin(&e, "misbehave");
    assert_still_serves(&p).await;
}

#[tokio::test]
async fn huge_output_is_an_invalid_verdict() {
    // Room for the 8 MiB reason, so the host's bound (not the memory limit) is what stops it.
    let settings = portcullis::plugin::PluginSettings {
        memory_limit: 64 << 20,
        ..settings()
    };
    let p = load(&engine(), "misbehave", settings).await;
    let e = on_request(&p, "huge-output").await.unwrap_err();
    assert!(matches!(e, PluginError::Verdict { .. }), "{e}");
    assert!(
        e.to_string().contains("deny reason of 8388608 bytes"),
        "{e}"
    );
    assert_still_serves(&p).await;
}

#[tokio::test]
async fn asking_for_more_body_than_declared_is_an_invalid_verdict() {
    let p = misbehave().await;
    let e = on_request(&p, "bad-verdict").await.unwrap_err();
    assert!(e.to_string().contains("request-body-limit"), "{e}");
    assert_names_plugin(&e, "misbehave");
}

#[tokio::test]
async fn deny_with_a_success_status_is_an_invalid_verdict() {
    let p = misbehave().await;
    let e = on_request(&p, "bad-status").await.unwrap_err();
    assert!(e.to_string().contains("deny status 200"), "{e}");
    assert_names_plugin(&e, "misbehave");
}

#[tokio::test]
async fn mask_plan_with_an_undeclared_pattern_is_an_invalid_verdict() {
    let p = misbehave().await;
    let h = headers(&[
        ("x-misbehave", "bad-mask"),
        ("content-type", "application/json"),
    ]);
    let req = request("r1", "GET", "/x");
    let mut held = Held::default();
    let verdict = p.on_response(&mut held, &req, 200, &h).await.unwrap();
    assert!(
        matches!(verdict, ResponseVerdict::NeedBody(_)),
        "{verdict:?}"
    );
    let e = p
        .on_response_body(&mut held, &req, 200, &h, Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("mask uses pattern 99"), "{e}");
    assert_names_plugin(&e, "misbehave");
}

#[tokio::test]
async fn log_and_stdout_floods_are_throttled_not_fatal() {
    let p = misbehave().await;
    assert!(matches!(
        on_request(&p, "log-flood").await.unwrap(),
        RequestVerdict::Allow
    ));
    assert!(matches!(
        on_request(&p, "stdout-flood").await.unwrap(),
        RequestVerdict::Allow
    ));
}

#[tokio::test]
async fn the_sandbox_has_no_files_environment_or_arguments() {
    let p = misbehave().await;
    let RequestVerdict::Deny(deny) = on_request(&p, "probe").await.unwrap() else {
        panic!("probe answers with a deny carrying its report");
    };
    assert_eq!(deny.reason, "fs=denied file=denied env=0 args=0");
}

#[tokio::test]
async fn fresh_instances_never_see_an_earlier_calls_globals() {
    let p = misbehave().await;
    for id in ["first", "second", "third"] {
        let verdict = p
            .on_request(
                &mut Held::default(),
                &request(id, "GET", "/x"),
                &headers(&[("x-misbehave", "remember")]),
            )
            .await
            .unwrap();
        assert!(
            matches!(verdict, RequestVerdict::Allow),
            "{id} saw a previous call: {verdict:?}"
        );
    }
}

#[tokio::test]
async fn the_hooks_of_one_request_share_an_instance_and_the_next_request_gets_a_new_one() {
    let p = misbehave().await;
    let h = headers(&[("x-misbehave", "remember")]);
    for id in ["first", "second"] {
        let req = request(id, "GET", "/x");
        let mut held = Held::default();
        let verdict = p.on_request(&mut held, &req, &h).await.unwrap();
        assert!(
            matches!(verdict, RequestVerdict::Allow),
            "{id} saw an earlier request: {verdict:?}"
        );
        // The response hook of the same request runs in the instance its request hook used.
        let ResponseVerdict::Replace(seen) = p.on_response(&mut held, &req, 200, &h).await.unwrap()
        else {
            panic!("{id}: the response hook did not see its own request's global");
        };
        assert_eq!((seen.status, seen.body.as_slice()), (409, id.as_bytes()));
    }
    // A response hook given no instance of its request gets a new one, which holds nothing.
    let verdict = p
        .on_response(
            &mut Held::default(),
            &request("third", "GET", "/x"),
            200,
            &h,
        )
        .await
        .unwrap();
    assert!(matches!(verdict, ResponseVerdict::Pass), "{verdict:?}");
}

#[tokio::test]
async fn an_exchange_keeps_instances_until_told_to_drop_them_before_a_long_wait() {
    let (_set, chain) = chain_of(&["misbehave"], FailurePolicy::FailClosed).await;
    let h = headers(&[("x-misbehave", "remember")]);
    let req = request("waits", "GET", "/x");
    let mut exchange = chain.begin();
    exchange.on_request(&req, &h).await.unwrap();
    exchange.drop_instances();
    // Had the request's instance survived, its response hook would replace the response.
    let out = exchange.on_response(&req, 200, &h).await.unwrap();
    assert!(
        matches!(out.decision, ResponseDecision::Continue),
        "{:?}",
        out.decision
    );
    let mut exchange = chain.begin();
    exchange.on_request(&req, &h).await.unwrap();
    let out = exchange.on_response(&req, 200, &h).await.unwrap();
    assert!(
        matches!(out.decision, ResponseDecision::Replace { .. }),
        "the control: without the drop the instance is kept"
    );
}

#[tokio::test]
async fn a_failed_call_drops_the_instance_its_request_held() {
    let p = misbehave().await;
    let req = request("held", "GET", "/x");
    let mut held = Held::default();
    p.on_request(&mut held, &req, &headers(&[("x-misbehave", "remember")]))
        .await
        .unwrap();
    p.on_response(&mut held, &req, 200, &headers(&[("x-misbehave", "trap")]))
        .await
        .unwrap_err();
    assert_eq!(format!("{held:?}"), "Held(none)");
}

#[tokio::test]
async fn reused_instances_do_keep_globals_which_is_why_fresh_is_the_default() {
    // The control for the test above: the same plugin in reuse mode does see the earlier id,
    // so the fresh-mode test would catch a host that reused instances.
    let settings = portcullis::plugin::PluginSettings {
        instance: InstanceMode::Reuse { calls: 10 },
        ..settings()
    };
    let p = load(&engine(), "misbehave", settings).await;
    let h = headers(&[("x-misbehave", "remember")]);
    assert!(matches!(
        p.on_request(&mut Held::default(), &request("first", "GET", "/x"), &h)
            .await
            .unwrap(),
        RequestVerdict::Allow
    ));
    let RequestVerdict::Deny(deny) = p
        .on_request(&mut Held::default(), &request("second", "GET", "/x"), &h)
        .await
        .unwrap()
    else {
        panic!("a reused instance keeps its globals");
    };
    assert_eq!(
        (deny.code.as_str(), deny.reason.as_str()),
        ("saw-previous", "first")
    );
}

#[tokio::test]
async fn reused_instances_are_dropped_after_a_failure() {
    let settings = portcullis::plugin::PluginSettings {
        instance: InstanceMode::Reuse { calls: 10 },
        ..settings()
    };
    let p = load(&engine(), "misbehave", settings).await;
    let remember = headers(&[("x-misbehave", "remember")]);
    p.on_request(
        &mut Held::default(),
        &request("before-trap", "GET", "/x"),
        &remember,
    )
    .await
    .unwrap();
    on_request(&p, "trap").await.unwrap_err();
    // The trapped instance (which held "before-trap") is gone: a new one remembers nothing.
    let verdict = p
        .on_request(
            &mut Held::default(),
            &request("after-trap", "GET", "/x"),
            &remember,
        )
        .await
        .unwrap();
    assert!(matches!(verdict, RequestVerdict::Allow), "{verdict:?}");
}

#[tokio::test]
async fn reused_instances_are_recycled_after_their_call_budget() {
    let settings = portcullis::plugin::PluginSettings {
        instance: InstanceMode::Reuse { calls: 2 },
        ..settings()
    };
    let p = load(&engine(), "misbehave", settings).await;
    let h = headers(&[("x-misbehave", "remember")]);
    let mut verdicts = Vec::new();
    for id in ["a", "b", "c", "d"] {
        let v = p
            .on_request(&mut Held::default(), &request(id, "GET", "/x"), &h)
            .await
            .unwrap();
        verdicts.push(matches!(v, RequestVerdict::Allow));
    }
    // a: new instance (allow), b: same instance (sees a), then recycled; c: new (allow), d: sees c.
    assert_eq!(verdicts, [true, false, true, false]);
}

async fn chain_of(
    names: &[&str],
    failure: FailurePolicy,
) -> (PluginSet, portcullis::plugin::Chain) {
    let engine = engine();
    let mut plugins = Vec::new();
    for n in names {
        let settings = portcullis::plugin::PluginSettings {
            failure,
            ..settings()
        };
        plugins.push(load(&engine, n, settings).await);
    }
    let set = PluginSet::new(plugins, 1);
    let chain = set.chain(names).unwrap();
    (set, chain)
}

#[tokio::test]
async fn fail_closed_plugin_failure_fails_the_chain() {
    let (_set, chain) = chain_of(&["misbehave", "allow-all"], FailurePolicy::FailClosed).await;
    let e = chain
        .begin()
        .on_request(
            &request("r", "GET", "/"),
            &headers(&[("x-misbehave", "trap")]),
        )
        .await
        .unwrap_err();
    assert_names_plugin(&e, "misbehave");
}

#[tokio::test]
async fn fail_open_plugin_failure_is_skipped_and_recorded() {
    let (_set, chain) = chain_of(&["misbehave", "deny-all"], FailurePolicy::FailOpen).await;
    let out = chain
        .begin()
        .on_request(
            &request("r", "GET", "/"),
            &headers(&[("x-misbehave", "loop")]),
        )
        .await
        .unwrap();
    // The failed plugin is recorded with its name and failure; the next plugin still decides.
    let StepResult::FailedOpen(why) = &out.trace[0].result else {
        panic!("expected a fail-open step first: {:?}", out.trace);
    };
    assert_eq!(out.trace[0].plugin.name, "misbehave");
    assert!(why.contains("timed out"), "{why}");
    let RequestDecision::Deny { by, deny } = &out.decision else {
        panic!("deny-all still denies: {:?}", out.decision);
    };
    assert_eq!(
        (by.name.as_str(), deny.code.as_str()),
        ("deny-all", "deny-all")
    );
}

#[tokio::test]
async fn first_deny_ends_the_chain() {
    let (_set, chain) = chain_of(&["deny-all", "misbehave"], FailurePolicy::FailClosed).await;
    // misbehave would trap, but deny-all comes first and ends the chain.
    let out = chain
        .begin()
        .on_request(
            &request("r", "DELETE", "/"),
            &headers(&[("x-misbehave", "trap")]),
        )
        .await
        .unwrap();
    assert!(matches!(out.decision, RequestDecision::Deny { .. }));
    assert_eq!(out.trace.len(), 1);
}

#[tokio::test]
async fn body_is_given_only_to_plugins_that_asked_and_only_within_their_limit() {
    let (_set, chain) = chain_of(&["allow-all", "misbehave"], FailurePolicy::FailClosed).await;
    let h = headers(&[("x-misbehave", "need-body"), ("content-type", "text/plain")]);
    let req = request("r", "POST", "/items");
    let mut exchange = chain.begin();
    let out = exchange.on_request(&req, &h).await.unwrap();
    assert_eq!(out.body_wants.len(), 1);
    assert_eq!(out.body_wants[0].index, 1, "only misbehave asked");
    assert_eq!(out.body_limit(), Some(1 << 20));

    let body = Bytes::from_static(b"this is forbidden");
    let out = exchange
        .on_request_body(&req, &h, &body, &out.body_wants.clone())
        .await
        .unwrap();
    let RequestDecision::Deny { deny, .. } = out.decision else {
        panic!("the body hook saw the body and denied");
    };
    assert_eq!(deny.code, "body-forbidden");

    let mut exchange = chain.begin();
    let wants = exchange.on_request(&req, &h).await.unwrap().body_wants;
    let too_big = Bytes::from(vec![b'a'; (1 << 20) + 1]);
    let e = exchange
        .on_request_body(&req, &h, &too_big, &wants)
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::BodyTooLarge { .. }), "{e}");
}

#[tokio::test]
async fn response_body_masking_returns_a_plan_with_findings_and_counts() {
    let (set, chain) = chain_of(&["misbehave"], FailurePolicy::FailClosed).await;
    let h = headers(&[
        ("x-misbehave", "need-body"),
        ("content-type", "application/json"),
    ]);
    let req = request("r", "GET", "/items");
    let mut exchange = chain.begin();
    let out = exchange.on_response(&req, 200, &h).await.unwrap();
    let body = Bytes::from_static(br#"{"a":"secret-123","b":"secret-456"}"#);
    let out = exchange
        .on_response_body(&req, 200, &h, &body, &out.body_wants)
        .await
        .unwrap();
    assert!(matches!(out.decision, ResponseDecision::Continue));
    let (by, plan) = &out.masks[0];
    assert_eq!(by.id().name, "misbehave");
    assert_eq!(plan.edits[0].kind, "secret");
    // The host reports what the plan masks: one finding per location, never the values.
    let plugin = set.get("misbehave").unwrap();
    let plans = [portcullis::mask::PlanRef {
        plan,
        patterns: plugin.patterns(),
    }];
    let masked =
        portcullis::mask::apply(&body, portcullis::mask::BodyKind::Json, &plans, None).unwrap();
    let found: Vec<(&str, &str, u32)> = masked
        .findings
        .iter()
        .map(|f| (f.kind.as_str(), f.location.as_str(), f.count))
        .collect();
    assert_eq!(found, vec![("secret", "/a", 1), ("secret", "/b", 1)]);
    let counters = set.get("misbehave").unwrap().counters();
    assert_eq!(counters, vec![("secrets-masked".to_string(), 2)]);
}

#[tokio::test]
async fn a_body_of_an_undeclared_content_type_is_not_offered() {
    let (_set, chain) = chain_of(&["misbehave"], FailurePolicy::FailClosed).await;
    let h = headers(&[("x-misbehave", "need-body"), ("content-type", "image/png")]);
    let out = chain
        .begin()
        .on_response(&request("r", "GET", "/"), 200, &h)
        .await
        .unwrap();
    assert!(out.body_wants.is_empty());
    assert_eq!(out.trace[0].result, StepResult::Verdict("body-not-offered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_in_fresh_mode_all_succeed() {
    let p = misbehave().await;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let p = p.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let id = format!("t{t}-{i}");
                    let h = headers(&[("x-misbehave", "remember")]);
                    let v = p
                        .on_request(&mut Held::default(), &request(&id, "GET", "/"), &h)
                        .await
                        .unwrap();
                    assert!(matches!(v, RequestVerdict::Allow), "{id}: {v:?}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}
