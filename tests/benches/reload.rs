//! Hot reload latency: the time from a plugin file landing (renamed into the plugin directory)
//! to the gateway serving the new version, through the real watcher with the shipped debounce
//! (200 ms), for a small Rust plugin (`versioned`, ~75 KB) and a large Python component
//! (`plugin-template-python`, ~18 MB): a never-seen file (compiled), and a file seen before
//! (a rollback: its compiled component is in the engine's cache). The baseline, measured in the
//! same run, is loading the same file directly (`load_plugin`: compile + describe + configure)
//! with no watcher and no debounce.
//!
//! Run: `scripts/build-plugins.sh && cargo bench -p portcullis-tests --bench reload`
#![allow(clippy::unwrap_used)] // benchmark setup: a failed unwrap is a broken benchmark
use std::path::Path;
use std::time::{Duration, Instant};

use portcullis::plugin::{PluginSettings, PluginSpec, load_plugin};
use portcullis_tests::gateway::TestGateway;

const MARKER: &[u8] = b"portcullis-test-version-00";

/// `versioned.wasm` with its version marker set to `v`.
fn small(v: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(portcullis_tests::plugin("versioned")).unwrap();
    let at = bytes
        .windows(MARKER.len())
        .position(|w| w == MARKER)
        .unwrap();
    bytes[at + MARKER.len() - 2..at + MARKER.len()].copy_from_slice(format!("{v:02}").as_bytes());
    bytes
}

/// `plugin-template-python.wasm` made distinct by a trailing custom section `bench` holding
/// `v` (same behaviour, another file and sha256).
fn large(v: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(portcullis_tests::plugin("plugin-template-python")).unwrap();
    let payload = format!("bench-{v}");
    let mut section = vec![5u8];
    section.extend_from_slice(b"bench");
    section.extend_from_slice(payload.as_bytes());
    bytes.push(0); // custom section id
    bytes.push(u8::try_from(section.len()).unwrap()); // size (< 128: one LEB128 byte)
    bytes.extend_from_slice(&section);
    bytes
}

fn land(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("landing");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const CONFIG: &str = r#"
[engine]
max_memory = "256MiB"

[[plugin]]
name = "versioned"
file = "versioned.wasm"

[[plugin]]
name = "plugin-template-python"
file = "plugin-template-python.wasm"
timeout = "1s"
memory_limit = "256MiB"
instance = "reuse"
[plugin.config]
blocked_methods = ["DELETE"]
paths = ["/admin/"]

[[route]]
name = "api"
upstream = "http://127.0.0.1:9"
authentication = "none"
plugins = ["versioned", "plugin-template-python"]
"#;

/// Land `bytes` as `file` and wait for the next generation: milliseconds.
async fn swap(gw: &TestGateway, file: &str, bytes: &[u8]) -> f64 {
    let live = gw.running.live();
    let before = live.status().generation;
    let started = Instant::now();
    land(&gw.dir.path().join("plugins").join(file), bytes);
    loop {
        if live.status().generation > before {
            return started.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{file} did not serve within 120 s: {:?}",
            live.status().last
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Load `bytes` directly on the running gateway's engine: milliseconds.
async fn direct(gw: &TestGateway, name: &str, bytes: &[u8], settings: PluginSettings) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&file, bytes).unwrap();
    let config = if name == "versioned" {
        serde_json::json!({})
    } else {
        serde_json::json!({"blocked_methods": ["DELETE"], "paths": ["/admin/"]})
    };
    let spec = PluginSpec {
        alias: None,
        name: name.to_string(),
        file,
        config,
        settings,
    };
    let engine = gw.running.live().gateway().engine.clone();
    let started = Instant::now();
    load_plugin(&engine, &spec).await.unwrap();
    started.elapsed().as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let gw = TestGateway::start_from_file(CONFIG, |dir| {
            std::fs::write(dir.join("plugins/versioned.wasm"), small(0)).unwrap();
            std::fs::write(dir.join("plugins/plugin-template-python.wasm"), large(0)).unwrap();
        })
        .await;
        let python = PluginSettings {
            timeout: Duration::from_secs(1),
            memory_limit: 256 << 20,
            instance: portcullis::plugin::InstanceMode::Reuse { calls: 1000 },
            ..PluginSettings::default()
        };
        let mut rows = Vec::new();

        // Small plugin: new versions, then rollbacks to versions already compiled.
        let (mut new, mut base_new, mut back, mut base_back) = (vec![], vec![], vec![], vec![]);
        for v in 1..=9 {
            base_new
                .push(direct(&gw, "versioned", &small(v + 50), PluginSettings::default()).await);
            new.push(swap(&gw, "versioned.wasm", &small(v)).await);
        }
        for v in 1..=9 {
            base_back.push(direct(&gw, "versioned", &small(v), PluginSettings::default()).await);
            back.push(swap(&gw, "versioned.wasm", &small(v)).await);
            // Move on to another (new) version, so that the next rollback is a change.
            swap(&gw, "versioned.wasm", &small(v + 60)).await;
        }
        rows.push(("small Rust plugin, new file", median(new), median(base_new)));
        rows.push((
            "small Rust plugin, cached (rollback)",
            median(back),
            median(base_back),
        ));

        // Large Python component: new files, then a rollback.
        let (mut new, mut base_new, mut back, mut base_back) = (vec![], vec![], vec![], vec![]);
        for v in 1..=3 {
            base_new.push(
                direct(
                    &gw,
                    "plugin-template-python",
                    &large(v + 50),
                    python.clone(),
                )
                .await,
            );
            new.push(swap(&gw, "plugin-template-python.wasm", &large(v)).await);
        }
        for v in 1..=3 {
            base_back.push(direct(&gw, "plugin-template-python", &large(v), python.clone()).await);
            back.push(swap(&gw, "plugin-template-python.wasm", &large(v)).await);
            swap(&gw, "plugin-template-python.wasm", &large(v + 20)).await;
        }
        rows.push((
            "large Python component, new file",
            median(new),
            median(base_new),
        ));
        rows.push((
            "large Python component, cached (rollback)",
            median(back),
            median(base_back),
        ));

        println!("| swap | file landed → serving (median) | direct load (median) | ratio |");
        println!("|---|---|---|---|");
        for (what, swap, base) in rows {
            println!(
                "| {what} | {swap:.0} ms | {base:.0} ms | {:.1}× |",
                swap / base
            );
        }
        let status = gw.running.live().status();
        assert_eq!(status.rejected, 0, "{status:?}");
    });
}
