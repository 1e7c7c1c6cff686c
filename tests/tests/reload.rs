//! Hot reload in a real gateway: plugin versions swapped 20 times while 100 clients keep
//! sending requests (none fails; each is decided by exactly one version); truncated, corrupt,
//! wrong-contract and failing-configure candidates leave the old version serving; symlink
//! swaps (Kubernetes `..data`), write-then-rename and in-place writes all land; a request in
//! flight finishes on the version it started with; settings that need a restart are reported.
//!
//! Versions of the `versioned` test plugin are its built component with the version marker
//! rewritten in its bytes: distinct files, distinct sha256, distinct decisions.
#![allow(clippy::unwrap_used)]
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portcullis::reload::Outcome;
use portcullis_tests::gateway::{TestGateway, TlsClient, config_file_text};
use portcullis_tests::mock_upstream::{MockUpstream, Reply};
use portcullis_tests::{logs, within};
use sha2::Digest;

const MARKER: &[u8] = b"portcullis-test-version-00";

/// The `versioned` component with version marker `v` (0..=99).
fn version(v: u32) -> Vec<u8> {
    let built = std::fs::read(portcullis_tests::plugin("versioned")).unwrap();
    let at: Vec<usize> = built
        .windows(MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == MARKER)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "the marker must appear exactly once in versioned.wasm"
    );
    let mut bytes = built;
    let digits = format!("{v:02}");
    bytes[at[0] + MARKER.len() - 2..at[0] + MARKER.len()].copy_from_slice(digits.as_bytes());
    bytes
}

fn marker(v: u32) -> String {
    format!("portcullis-test-version-{v:02}")
}

/// Write `bytes` to `path` the way deployment tools do: to a temporary file, then renamed over.
fn land(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(upstream: &str, reload: &str, plugin_config: &str) -> String {
    format!(
        r#"
[reload]
{reload}

[[plugin]]
name = "versioned"
file = "versioned.wasm"
timeout = "5s"
[plugin.config]
{plugin_config}

[[route]]
name = "api"
upstream = "{upstream}"
authentication = "none"
plugins = ["versioned"]
"#
    )
}

/// An upstream answering with the version marker the plugin stamped on the request.
async fn upstream() -> MockUpstream {
    MockUpstream::start(|seen| {
        let stamped = seen
            .headers
            .get("x-plugin-version")
            .map_or("none", |v| v.to_str().unwrap());
        Reply::typed("text/plain", None, stamped.to_string())
    })
    .await
}

async fn start(reload: &str, plugin_config: &str) -> (TestGateway, MockUpstream) {
    let upstream = upstream().await;
    let text = config(&upstream.url(), reload, plugin_config);
    let gw = TestGateway::start_from_file(&text, |dir| {
        std::fs::write(dir.join("plugins/versioned.wasm"), version(0)).unwrap();
    })
    .await;
    (gw, upstream)
}

/// Poll until a request is decided by `want` (a liveness bound, not a timing assertion).
async fn until_serving(client: &TlsClient, want: &str) {
    within(Duration::from_secs(60), async {
        loop {
            let answer = client.get("/v").await;
            if answer.status == 200 && answer.text() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_a_hundred_concurrent_clients_fail_no_request() {
    let (gw, _upstream) = start("debounce = \"50ms\"", "").await;
    let plugin_file = gw.dir.path().join("plugins/versioned.wasm");
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..100 {
        let (client, stop) = (gw.client(false), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            // Bounded: at most 2000 requests per client.
            while !stop.load(Ordering::SeqCst) && seen.len() < 2000 {
                let answer = client.get("/v").await;
                seen.push((answer.status, answer.text()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        }));
    }
    let probe = gw.client(false);
    for v in 1..=20 {
        land(&plugin_file, &version(v));
        until_serving(&probe, &marker(v)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let published: BTreeSet<String> = (0..=20).map(marker).collect();
    let mut total = 0;
    let mut versions_seen = BTreeSet::new();
    for client in clients {
        let seen = client.await.unwrap();
        let mut last = 0;
        for (status, body) in &seen {
            assert_eq!(*status, 200, "a request failed during the swaps: {body}");
            assert!(
                published.contains(body),
                "decided by no published version: {body}"
            );
            // A client's requests are sequential: it never goes back to an older version.
            let v: u32 = body[body.len() - 2..].parse().unwrap();
            assert!(v >= last, "went back from version {last} to {v}");
            last = v;
            versions_seen.insert(v);
        }
        total += seen.len();
    }
    assert!(total >= 100, "only {total} requests");
    assert!(versions_seen.len() > 2, "{versions_seen:?}");
    let status = gw.running.live().status();
    assert_eq!(status.generation, 21, "{status:?}");
    assert_eq!(status.applied, 20, "{status:?}");
    assert_eq!(status.rejected, 0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_candidates_are_rejected_and_the_old_version_keeps_serving() {
    logs::capture();
    let (gw, upstream) = start("watch = false", "").await;
    let dir = gw.dir.path().to_path_buf();
    let plugin_file = dir.join("plugins/versioned.wasm");
    let client = gw.client(false);
    let live = gw.running.live().clone();
    land(&plugin_file, &version(1));
    assert_eq!(live.reload("admin").await.outcome, Outcome::Applied);
    until_serving(&client, &marker(1)).await;

    let good = version(1);
    let old_contract = wat::parse_str(
        r#"(component
            (instance $plugin)
            (export "portcullis:policy/plugin@0.1.0" (instance $plugin)))"#,
    )
    .unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("truncated", good[..good.len() / 2].to_vec(), "versioned"),
        (
            "corrupt",
            b"\0asm\x0d\0\x01\0garbage that is no component".to_vec(),
            "versioned",
        ),
        (
            "wrong contract version",
            old_contract,
            "portcullis:policy@0.2.0",
        ),
    ];
    for (case, bytes, expected) in cases {
        land(&plugin_file, &bytes);
        let attempt = live.reload("admin").await;
        assert_eq!(attempt.outcome, Outcome::Rejected, "{case}: {attempt:?}");
        let error = attempt.error.unwrap();
        assert!(error.contains(expected), "{case}: {error}");
        assert_eq!(client.get("/v").await.text(), marker(1), "{case}");
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        let log = logs::text();
        assert!(
            log.lines()
                .any(|l| l.contains("policy reload rejected") && l.contains(&digest)),
            "{case}: no rejection line with the candidate's sha256 {digest}"
        );
    }
    // A configuration whose plugin refuses it.
    land(&plugin_file, &good);
    let refusing = config(&upstream.url(), "watch = false", "refuse = true");
    land(
        &dir.join("portcullis.toml"),
        config_file_text(&refusing).as_bytes(),
    );
    let attempt = live.reload("admin").await;
    assert_eq!(attempt.outcome, Outcome::Rejected, "{attempt:?}");
    assert!(attempt.error.unwrap().contains("configured to refuse"));
    // An invalid configuration file.
    land(&dir.join("portcullis.toml"), b"[[route]]\nname = 7\n");
    assert_eq!(live.reload("admin").await.outcome, Outcome::Rejected);
    assert_eq!(client.get("/v").await.text(), marker(1));
    let status = live.status();
    assert_eq!((status.generation, status.rejected), (2, 5), "{status:?}");

    // A restart-only setting is reported, and the rest applies.
    let back = config(&upstream.url(), "watch = false", "");
    let text =
        config_file_text(&back).replace("shutdown_grace = \"5s\"", "shutdown_grace = \"9s\"");
    land(&dir.join("portcullis.toml"), text.as_bytes());
    land(&plugin_file, &version(2));
    let attempt = live.reload("admin").await;
    assert_eq!(attempt.outcome, Outcome::Applied, "{attempt:?}");
    assert_eq!(attempt.restart_needed, vec!["server".to_string()]);
    assert_eq!(client.get("/v").await.text(), marker(2));
    // Nothing changed: nothing published.
    assert_eq!(live.reload("admin").await.outcome, Outcome::Unchanged);
    assert_eq!(live.status().generation, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_swaps_renames_in_place_writes_and_policy_edits_all_land() {
    let upstream = upstream().await;
    let text = config(&upstream.url(), "debounce = \"50ms\"", "");
    // The plugin directory as a Kubernetes volume: versioned.wasm -> ..data/versioned.wasm,
    // ..data -> ..v0.
    let gw = TestGateway::start_from_file(&text, |dir| {
        let plugins = dir.join("plugins");
        std::fs::create_dir(plugins.join("..v0")).unwrap();
        std::fs::write(plugins.join("..v0/versioned.wasm"), version(0)).unwrap();
        std::os::unix::fs::symlink("..v0", plugins.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/versioned.wasm", plugins.join("versioned.wasm"))
            .unwrap();
    })
    .await;
    let plugins = gw.dir.path().join("plugins");
    let client = gw.client(false);
    assert_eq!(client.get("/v").await.text(), marker(0));

    // The `..data` swap: a new directory, a new link, renamed over the old one.
    std::fs::create_dir(plugins.join("..v1")).unwrap();
    std::fs::write(plugins.join("..v1/versioned.wasm"), version(1)).unwrap();
    std::os::unix::fs::symlink("..v1", plugins.join("..data_tmp")).unwrap();
    std::fs::rename(plugins.join("..data_tmp"), plugins.join("..data")).unwrap();
    until_serving(&client, &marker(1)).await;

    // Write then rename over (replacing the symlink with a file).
    land(&plugins.join("versioned.wasm"), &version(2));
    until_serving(&client, &marker(2)).await;

    // Written in place: a reload may see the file half written and reject it; the next event
    // brings the whole file.
    std::fs::write(plugins.join("versioned.wasm"), version(3)).unwrap();
    until_serving(&client, &marker(3)).await;

    // Deleted, then recreated.
    std::fs::remove_file(plugins.join("versioned.wasm")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        client.get("/v").await.text(),
        marker(3),
        "the last good version serves"
    );
    std::fs::write(plugins.join("versioned.wasm"), version(4)).unwrap();
    until_serving(&client, &marker(4)).await;

    // A policy edit: the route no longer runs the plugin.
    let edited = text.replace("plugins = [\"versioned\"]", "plugins = []");
    land(
        &gw.dir.path().join("portcullis.toml"),
        config_file_text(&edited).as_bytes(),
    );
    until_serving(&client, "none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_version_it_started_with() {
    let (gw, _upstream) = start("watch = false", "").await;
    let plugin_file = gw.dir.path().join("plugins/versioned.wasm");
    let live = gw.running.live().clone();
    let slow = {
        let client = gw.client(false);
        tokio::spawn(async move {
            client
                .send(
                    "GET",
                    "/slow",
                    &[("x-slow-ms", "1500")],
                    bytes::Bytes::new(),
                )
                .await
        })
    };
    // The slow request is inside version 0's plugin now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    land(&plugin_file, &version(1));
    assert_eq!(live.reload("admin").await.outcome, Outcome::Applied);
    let client = gw.client(false);
    assert_eq!(client.get("/v").await.text(), marker(1));
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.text()), (200, marker(0)));

    // `portcullis plugins list` shows what serves now.
    let admin = gw.running.admin_addr().unwrap();
    let (status, body) = portcullis::cli::admin_request(admin, http::Method::GET, "/plugins", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = portcullis::cli::render_plugins(&listed);
    let digest = hex::encode(sha2::Sha256::digest(version(1)));
    assert!(text.contains(&format!("sha256:{digest}")), "{text}");
    assert!(text.contains("versioned"), "{text}");
    assert!(text.contains("generation 2"), "{text}");
    assert_eq!(listed["plugins"][0]["sha256"], digest);
    // And a reload through the admin API.
    let (status, body) = portcullis::cli::admin_request(admin, http::Method::POST, "/reload", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"unchanged\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_the_operator_endpoints_need_it_and_the_probes_do_not() {
    let upstream = upstream().await;
    // Lines before the first table header land in the harness's `[server]` table.
    let text = format!(
        "admin_token_file = \"admin.token\"\n{}",
        config(&upstream.url(), "watch = false", "")
    );
    let gw = TestGateway::start_from_file(&text, |dir| {
        std::fs::write(dir.join("plugins/versioned.wasm"), version(0)).unwrap();
        std::fs::write(dir.join("admin.token"), "  op-token-7f3a\n").unwrap();
    })
    .await;
    let admin = gw.running.admin_addr().unwrap();
    let call = |method: http::Method, path: &'static str, token: Option<&'static str>| async move {
        portcullis::cli::admin_call(admin, method, path, token, None)
            .await
            .unwrap()
    };

    for (method, path) in [
        (http::Method::GET, "/plugins"),
        (http::Method::POST, "/reload"),
    ] {
        let (status, body) = call(method.clone(), path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("Unauthorized"), "{body}");
        let (status, body) = call(method.clone(), path, Some("op-token-7f3")).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(!body.contains("op-token"), "{body}");
        let (status, body) = call(method, path, Some("op-token-7f3a")).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = call(http::Method::GET, "/plugins", Some("op-token-7f3a")).await;
    assert!(body.contains("versioned"), "{status} {body}");
    // Probes stay open to orchestrators.
    for path in ["/healthz", "/readyz"] {
        let (status, body) = call(http::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}
