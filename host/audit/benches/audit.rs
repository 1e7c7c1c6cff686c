//! Audit log speed, in one run, each figure next to a baseline measured in the same run:
//!
//! - `throughput`: N producer threads append `request.decision` records through the writer
//!   (`Wait::Written` under `Durability::Batched { 100 ms }`, `Wait::Synced` under
//!   `Durability::Strict`), against raw `write_all` of the same bytes to a file with the same
//!   fsyncs (one per batch of N records for strict, one per 100 ms for batched): the ratio is
//!   the writer's overhead over the disk. Every row uses the fast path the gateway uses
//!   (`append_fields_blocking` of a `#[derive(Serialize)]` struct serialised into `Fields` on
//!   the producer's thread) except `batched-map`, the old `append_blocking(Map)`, kept as the
//!   comparison.
//! - `cpu`: CPU time per request on the caller's thread and on the writer's thread (read from
//!   `/proc/thread-self/schedstat`, so Linux only), one producer, `Map` and `Fields` rows side
//!   by side; plus the caller's build + hand-over time alone (until the first `Pending` poll,
//!   i.e. without the parked wait).
//! - `cpu/tokio/N`: the gateway's way: N tasks on a Tokio multi-thread runtime with 2 workers,
//!   each looping over a request's two records (the decision awaited with `append_fields`, the
//!   completion `submit_fields`-ed), and the CPU time of every thread of the process per
//!   request (runtime workers, writer, the rest), against `serde_json` + SHA-256 of the same
//!   two records' fields on one thread.
//! - `request_path/…` (criterion): the caller-side pieces (building the fields as a `Map` or as
//!   `Fields`, `append`, `submit`) and the writer's per-record staging (`write_line` of a `Map`
//!   and `write_fields_line` of `Fields`), against `serde_json` + SHA-256 of the same fields.
//! - `verify`: `verify::verify` over a log of 200k records (several segments, a checkpoint
//!   every 1000 records), against SHA-256 of the same segment files and against a bare
//!   parse-and-rehash of them (`Record::parse`, chain, `Frontier`).
//!
//! Run: `cargo bench -p portcullis-audit --bench audit` (about 120 s). An argument
//! runs only what it names: a section (`throughput`, `cpu`, `request_path`, `verify`), a
//! throughput row (`throughput/batched/64`, `throughput/strict/8`, …), the thread or Tokio part
//! of `cpu` (`cpu/thread`, `cpu/tokio`) or one Tokio row (`cpu/tokio/64`).
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use portcullis_audit::merkle::{Frontier, leaf_hash};
use portcullis_audit::note::SigningKey;
use portcullis_audit::record::{self, Fields, Head, Record};
use portcullis_audit::segment;
use portcullis_audit::verify;
use portcullis_audit::writer::{AuditLog, Durability, Options, Wait};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

const ORIGIN: &str = "bench.portcullis/audit";
const BATCHED: Durability = Durability::Batched {
    interval: Duration::from_millis(100),
};

/// How long each part runs: full under `cargo bench`, a smoke run under `cargo test --benches`.
#[derive(Clone, Copy)]
struct Scale {
    /// One round of a throughput configuration (writer and baseline alike).
    run: Duration,
    /// Interleaved rounds (writer, baseline, writer, …) per throughput configuration.
    rounds: usize,
    /// Requests in each CPU row.
    cpu_requests: u64,
    /// Requests in each Tokio CPU row (all tasks together).
    tokio_requests: u64,
    /// Records in the verified log.
    verify_records: u64,
    /// Interleaved rounds of the verify section.
    verify_rounds: usize,
}

impl Scale {
    fn new(bench: bool) -> Self {
        if bench {
            Scale {
                run: Duration::from_secs(1),
                rounds: 3,
                cpu_requests: 20_000,
                tokio_requests: 200_000,
                verify_records: 200_000,
                verify_rounds: 3,
            }
        } else {
            Scale {
                run: Duration::from_millis(50),
                rounds: 1,
                cpu_requests: 200,
                tokio_requests: 2_000,
                verify_records: 2_000,
                verify_rounds: 1,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Realistic records: the shape of `Trail::decision_fields` and `completion_fields` in
// host/src/audit.rs, built from owned strings each time (as the gateway does).

struct Plugin {
    name: String,
    version: String,
    sha256: String,
    hook: &'static str,
    verdict: &'static str,
}

struct Request {
    request_id: String,
    route: String,
    operation: String,
    method: String,
    target: String,
    addr: String,
    issuer: String,
    subject: String,
    tenant: String,
    app_id: String,
    roles: Vec<String>,
    /// The principal as the decision records it, rendered once per verified token (the
    /// gateway keeps it with the cached caller).
    principal: Box<RawValue>,
    plugins: Vec<Plugin>,
    decision: &'static str,
    by: String,
}

impl Request {
    fn new(i: u64) -> Self {
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47".to_string();
        let plugin = |name: &str, version: &str, seed: &str| Plugin {
            name: name.into(),
            version: version.into(),
            sha256: hex::encode(Sha256::digest(seed.as_bytes())),
            hook: "Request",
            verdict: "allow",
        };
        let issuer = format!("https://login.microsoftonline.com/{tenant}/v2.0");
        let subject = uuid::Uuid::new_v4().to_string();
        let app_id = uuid::Uuid::new_v4().to_string();
        let roles: Vec<String> = vec!["Storage.Reader".into(), "Audit.Viewer".into()];
        let principal = serde_json::value::to_raw_value(&PrincipalRecord {
            iss: &issuer,
            sub: &subject,
            tenant: &tenant,
            app_id: &app_id,
            roles: &roles,
        })
        .expect("a principal serialises");
        Request {
            request_id: uuid::Uuid::new_v4().to_string(),
            route: "arm-storage".into(),
            operation: "Microsoft.Storage/storageAccounts/read".into(),
            method: "GET".into(),
            target: format!(
                "/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourceGroups/rg-{}/providers/Microsoft.Storage/storageAccounts/sa{:04}",
                i % 7,
                i % 1000
            ),
            addr: format!(
                "10.20.{}.{}:{}",
                i % 250,
                (i * 7) % 250,
                40_000 + i % 20_000
            ),
            issuer,
            subject,
            app_id,
            tenant,
            roles,
            principal,
            plugins: vec![
                plugin("guard", "1.4.2", "guard"),
                plugin("mask", "0.9.0", "mask"),
            ],
            decision: "allow",
            by: "guard".into(),
        }
    }

    fn decision_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("request_id".into(), json!(self.request_id));
        fields.insert("route".into(), json!(self.route));
        fields.insert("operation".into(), json!(self.operation));
        fields.insert("method".into(), json!(self.method));
        fields.insert("target".into(), json!(self.target));
        fields.insert("source".into(), json!({"addr": self.addr, "tls": true}));
        fields.insert(
            "principal".into(),
            json!({
                "iss": self.issuer, "sub": self.subject, "tenant": self.tenant,
                "app_id": self.app_id, "roles": self.roles,
            }),
        );
        fields.insert(
            "plugins".into(),
            Value::Array(
                self.plugins
                    .iter()
                    .map(|p| {
                        json!({
                            "name": p.name, "version": p.version, "sha256": p.sha256,
                            "hook": p.hook, "verdict": p.verdict, "error": null,
                        })
                    })
                    .collect(),
            ),
        );
        fields.insert("decision".into(), json!(self.decision));
        fields.insert("by".into(), json!(self.by));
        fields
    }

    fn completion_fields(&self, decision_seq: u64) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("request_id".into(), json!(self.request_id));
        fields.insert("decision_seq".into(), json!(decision_seq));
        fields.insert("status".into(), json!(200));
        fields.insert("outcome".into(), json!("ok"));
        fields.insert("latency_us".into(), json!(1234));
        fields.insert(
            "upstream".into(),
            json!({"status": 200, "request_id": self.subject}),
        );
        fields
    }
}

// The fast path the gateway switches to: the same records as `#[derive(Serialize)]` structs
// borrowing the request's strings, serialised into `Fields` on the request's task.

#[derive(Serialize)]
struct DecisionRecord<'a> {
    request_id: &'a str,
    route: &'a str,
    operation: &'a str,
    method: &'a str,
    target: &'a str,
    source: SourceRecord<'a>,
    principal: &'a RawValue,
    plugins: PluginRecords<'a>,
    decision: &'a str,
    by: &'a str,
}

#[derive(Serialize)]
struct SourceRecord<'a> {
    addr: &'a str,
    tls: bool,
}

#[derive(Serialize)]
struct PrincipalRecord<'a> {
    iss: &'a str,
    sub: &'a str,
    tenant: &'a str,
    app_id: &'a str,
    roles: &'a [String],
}

/// The plugins, serialised straight from the request's steps (no `Vec` of records).
struct PluginRecords<'a>(&'a [Plugin]);

impl Serialize for PluginRecords<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|p| PluginRecord {
            name: &p.name,
            version: &p.version,
            sha256: &p.sha256,
            hook: p.hook,
            verdict: p.verdict,
            error: None,
        }))
    }
}

#[derive(Serialize)]
struct PluginRecord<'a> {
    name: &'a str,
    version: &'a str,
    sha256: &'a str,
    hook: &'a str,
    verdict: &'a str,
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct CompletionRecord<'a> {
    request_id: &'a str,
    decision_seq: u64,
    status: u16,
    outcome: &'a str,
    latency_us: u64,
    upstream: UpstreamRecord<'a>,
}

#[derive(Serialize)]
struct UpstreamRecord<'a> {
    status: u16,
    request_id: &'a str,
}

impl Request {
    fn decision(&self) -> Fields {
        Fields::from_serialize(&self.decision_record()).expect("a decision record serialises")
    }

    fn decision_record(&self) -> DecisionRecord<'_> {
        DecisionRecord {
            request_id: &self.request_id,
            route: &self.route,
            operation: &self.operation,
            method: &self.method,
            target: &self.target,
            source: SourceRecord {
                addr: &self.addr,
                tls: true,
            },
            principal: &self.principal,
            plugins: PluginRecords(&self.plugins),
            decision: self.decision,
            by: &self.by,
        }
    }

    fn completion(&self, decision_seq: u64) -> Fields {
        let record = CompletionRecord {
            request_id: &self.request_id,
            decision_seq,
            status: 200,
            outcome: "ok",
            latency_us: 1234,
            upstream: UpstreamRecord {
                status: 200,
                request_id: &self.subject,
            },
        };
        Fields::from_serialize(&record).expect("a completion record serialises")
    }
}

/// The requests, after checking that the fast path stores the very bytes of the `Map` path.
fn requests(n: u64) -> Arc<Vec<Request>> {
    let requests = requests_unchecked(n);
    for r in requests.iter().take(8) {
        assert_eq!(r.decision(), Fields::from_map(&r.decision_fields()));
        assert_eq!(r.completion(7), Fields::from_map(&r.completion_fields(7)));
    }
    requests
}

fn requests_unchecked(n: u64) -> Arc<Vec<Request>> {
    Arc::new((0..n).map(Request::new).collect())
}

/// Record lines as the writer stores them (same head, same fields), for the raw baselines.
fn stored_lines(requests: &[Request]) -> Vec<Vec<u8>> {
    let mut prev = record::genesis(ORIGIN);
    requests
        .iter()
        .enumerate()
        .map(|(seq, r)| {
            let mut line = Vec::new();
            record::write_line(
                &mut line,
                &Head {
                    log: ORIGIN,
                    seq: seq as u64,
                    epoch: 1,
                    ts: SystemTime::now(),
                    prev,
                    kind: "request.decision",
                },
                &r.decision_fields(),
            );
            prev = leaf_hash(&line[..line.len() - 1]);
            line
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Plumbing: a log in a directory, a minimal executor for the async API, thread CPU time.

fn open_log(dir: &Path, durability: Durability, checkpoint_records: u64) -> AuditLog {
    let key = SigningKey::generate(ORIGIN).expect("a signing key");
    open_log_with(dir, key, durability, checkpoint_records, 64 << 20)
}

fn open_log_with(
    dir: &Path,
    key: SigningKey,
    durability: Durability,
    checkpoint_records: u64,
    segment_bytes: u64,
) -> AuditLog {
    let mut options = Options::new(dir.to_path_buf(), ORIGIN.into(), key);
    options.durability = durability;
    options.checkpoint_records = checkpoint_records;
    options.segment_bytes = segment_bytes;
    AuditLog::open(options).expect("open the audit log").0
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the current thread (the crate has no async runtime of its own).
fn thread_waker() -> Waker {
    Waker::from(Arc::new(Unpark(thread::current())))
}

/// Poll `future` on this thread, parking between polls.
fn block_on<F: Future>(waker: &Waker, future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

/// Nanoseconds a thread has run on a CPU (first field of `schedstat`), 0 if unknown.
fn cpu_ns(schedstat: &Path) -> u64 {
    std::fs::read_to_string(schedstat)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn this_thread_cpu() -> u64 {
    cpu_ns(Path::new("/proc/thread-self/schedstat"))
}

/// The one live `audit-writer` thread of this process: its CPU time and write(2) count.
struct WriterThread(PathBuf);

impl WriterThread {
    /// The thread names itself once it runs: look for a while.
    fn find() -> Option<Self> {
        for _ in 0..1000 {
            let found = std::fs::read_dir("/proc/self/task")
                .ok()?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|task| {
                    std::fs::read_to_string(task.join("comm"))
                        .is_ok_and(|c| c.trim() == "audit-writer")
                });
            if let Some(task) = found {
                return Some(WriterThread(task));
            }
            thread::sleep(Duration::from_millis(1));
        }
        None
    }

    fn cpu(&self) -> u64 {
        cpu_ns(&self.0.join("schedstat"))
    }

    /// `syscw` of the thread's `io`: write system calls (one per committed batch, plus one per
    /// checkpoint line).
    fn writes(&self) -> u64 {
        std::fs::read_to_string(self.0.join("io"))
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|l| l.strip_prefix("syscw:"))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

fn per(ns: u64, n: u64) -> f64 {
    ns as f64 / 1000.0 / n.max(1) as f64
}

// ---------------------------------------------------------------------------------------------
// Throughput.

/// How a producer hands a record over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `decision_fields()` (a `Map`), then `append_blocking` (serialised on the caller).
    Map,
    /// `decision()` (a struct serialised into `Fields`), then `append_fields_blocking`.
    Fields,
}

struct Load {
    id: &'static str,
    api: Api,
    name: &'static str,
    durability: Durability,
    wait: Wait,
    producers: usize,
    checkpoint_records: u64,
}

struct Measured {
    records: u64,
    elapsed: Duration,
    caller_cpu: u64,
    writer_cpu: u64,
    writer_writes: u64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

/// `load.producers` threads append decision records for `duration`.
fn drive(load: &Load, duration: Duration, requests: &Arc<Vec<Request>>) -> Measured {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = Arc::new(open_log(
        dir.path(),
        load.durability,
        load.checkpoint_records,
    ));
    let writer = WriterThread::find().expect("the audit-writer thread");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(load.producers + 1));
    let producers: Vec<_> = (0..load.producers)
        .map(|p| {
            let (log, stop, start, requests) =
                (log.clone(), stop.clone(), start.clone(), requests.clone());
            let (wait, api) = (load.wait, load.api);
            thread::spawn(move || {
                start.wait();
                let cpu = this_thread_cpu();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let request = &requests[(p * 131 + n) % requests.len()];
                    match api {
                        Api::Map => log
                            .append_blocking("request.decision", request.decision_fields(), wait)
                            .expect("append"),
                        Api::Fields => log
                            .append_fields_blocking("request.decision", request.decision(), wait)
                            .expect("append"),
                    };
                    n += 1;
                }
                (n as u64, this_thread_cpu().saturating_sub(cpu))
            })
        })
        .collect();
    let (writer_cpu, writer_writes) = (writer.cpu(), writer.writes());
    start.wait();
    let started = Instant::now();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let (mut records, mut caller_cpu) = (0, 0);
    for producer in producers {
        let (n, cpu) = producer.join().expect("a producer");
        records += n;
        caller_cpu += cpu;
    }
    let elapsed = started.elapsed();
    let measured = Measured {
        records,
        elapsed,
        caller_cpu,
        writer_cpu: writer.cpu().saturating_sub(writer_cpu),
        writer_writes: writer.writes().saturating_sub(writer_writes),
    };
    log.close().expect("close the audit log");
    measured
}

/// A file opened for appending in a fresh temporary directory (removed when the first part
/// is dropped).
fn temporary_append_file(name: &str) -> (tempfile::TempDir, File) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join(name))
        .expect("a file");
    (dir, file)
}

/// The disk's floor for the same bytes: one `write_all` of `batch` lines at a time, then
/// `fdatasync` after every batch (`sync_every: None`) or every `sync_every`. Stops after
/// `duration` or 300k records, whichever comes first.
fn raw_baseline(
    lines: &[Vec<u8>],
    batch: usize,
    sync_every: Option<Duration>,
    duration: Duration,
) -> (u64, Duration) {
    let (_dir, mut file) = temporary_append_file("raw.jsonl");
    let buffers: Vec<Vec<u8>> = lines
        .chunks(batch)
        .filter(|c| c.len() == batch)
        .map(|c| c.concat())
        .collect();
    let started = Instant::now();
    let mut synced = started;
    let mut records = 0u64;
    for buffer in buffers.iter().cycle() {
        file.write_all(buffer).expect("write");
        records += batch as u64;
        match sync_every {
            None => file.sync_data().expect("fdatasync"),
            Some(interval) if synced.elapsed() >= interval => {
                file.sync_data().expect("fdatasync");
                synced = Instant::now();
            }
            Some(_) => {}
        }
        if started.elapsed() >= duration || records >= 300_000 {
            break;
        }
    }
    if sync_every.is_some() {
        file.sync_data().expect("fdatasync");
    }
    (records, started.elapsed())
}

fn throughput(scale: Scale, wanted: &dyn Fn(&str) -> bool) {
    let mut loads = Vec::new();
    for producers in [1, 8, 64] {
        loads.push(Load {
            id: "batched",
            api: Api::Fields,
            name: "batched 100 ms, `Wait::Written`, `append_fields`",
            durability: BATCHED,
            wait: Wait::Written,
            producers,
            checkpoint_records: 1000,
        });
    }
    loads.push(Load {
        id: "batched-map",
        api: Api::Map,
        name: "the same through `append(Map)` (the old API)",
        durability: BATCHED,
        wait: Wait::Written,
        producers: 64,
        checkpoint_records: 1000,
    });
    loads.push(Load {
        id: "batched-checkpoint-1s",
        api: Api::Fields,
        name: "`append_fields`, checkpoints every 1 s only (not every 1000 records)",
        durability: BATCHED,
        wait: Wait::Written,
        producers: 64,
        checkpoint_records: u64::MAX,
    });
    for producers in [1, 8, 64] {
        loads.push(Load {
            id: "strict",
            api: Api::Fields,
            name: "strict, `Wait::Synced`, `append_fields`",
            durability: Durability::Strict,
            wait: Wait::Synced,
            producers,
            checkpoint_records: 1000,
        });
    }
    loads.retain(|l| wanted(&format!("throughput/{}/{}", l.id, l.producers)));
    if loads.is_empty() {
        return;
    }
    let requests = requests(1024);
    let lines = stored_lines(&requests);
    let mean = lines.iter().map(Vec::len).sum::<usize>() / lines.len();
    let fields = requests
        .iter()
        .map(|r| serde_json::to_vec(&r.decision_fields()).map_or(0, |v| v.len()))
        .sum::<usize>()
        / requests.len();
    println!(
        "\n## throughput: `request.decision` records of {mean} bytes ({fields} bytes of fields); per row {} rounds of {} s writer then {} s raw baseline, medians",
        scale.rounds,
        scale.run.as_secs_f64(),
        scale.run.as_secs_f64()
    );
    println!(
        "| row | configuration | producers | writer records/s | raw baseline records/s | ratio | records per write(2) | caller CPU µs/record | writer CPU µs/record |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for load in &loads {
        let sync_every = match load.durability {
            Durability::Strict => None,
            Durability::Batched { interval } => Some(interval),
        };
        let (mut rates, mut raw_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut records, mut writes, mut caller_cpu, mut writer_cpu) = (0, 0, 0, 0);
        for _ in 0..scale.rounds {
            let m = drive(load, scale.run, &requests);
            let (raw, raw_elapsed) = raw_baseline(&lines, load.producers, sync_every, scale.run);
            let raw_rate = raw as f64 / raw_elapsed.as_secs_f64();
            rates.push(m.rate());
            raw_rates.push(raw_rate);
            ratios.push(m.rate() / raw_rate);
            records += m.records;
            writes += m.writer_writes;
            caller_cpu += m.caller_cpu;
            writer_cpu += m.writer_cpu;
        }
        println!(
            "| `throughput/{}/{}` | {} | {} | {:.0} | {:.0} | {:.3}× | {:.1} | {:.2} | {:.2} |",
            load.id,
            load.producers,
            load.name,
            load.producers,
            median_f64(rates),
            median_f64(raw_rates),
            median_f64(ratios),
            records as f64 / writes.max(1) as f64,
            per(caller_cpu, records),
            per(writer_cpu, records),
        );
    }
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// CPU per request, one producer.

/// What the caller does per request in a `cpu` row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Does {
    /// The decision, awaited (`Wait::Written`).
    Decision,
    /// The completion, not awaited.
    Completion,
    /// Both: one gateway request.
    Both,
    /// Both, the decision handed over without waiting for it (`submit`), one awaited append
    /// per 256 requests: building and handing over alone, the parked waits amortised away and
    /// the writer mostly busy (so a hand-over seldom has to wake it).
    HandOver,
}

fn cpu(scale: Scale) {
    let requests = requests(1024);
    let waker = thread_waker();
    println!(
        "\n## cpu: one producer, batched 100 ms, {} requests per row; thread CPU time from schedstat",
        scale.cpu_requests
    );
    println!(
        "| caller does | API | records | wall µs/request | caller CPU µs/request | writer CPU µs/request | writer CPU µs/record |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rows = [
        ("decision: build + append(Written)", Does::Decision),
        ("completion: build + submit", Does::Completion),
        ("both (one gateway request)", Does::Both),
        (
            "both, the decision not awaited (one wait per 256 requests)",
            Does::HandOver,
        ),
    ];
    for (name, does) in rows {
        for api in [Api::Map, Api::Fields] {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let log = open_log(dir.path(), BATCHED, 1000);
            let writer = WriterThread::find().expect("the audit-writer thread");
            let n = scale.cpu_requests;
            let (writer_cpu, caller_cpu) = (writer.cpu(), this_thread_cpu());
            let started = Instant::now();
            let mut records = 0u64;
            for i in 0..n {
                let request = &requests[i as usize % requests.len()];
                let awaited = match does {
                    Does::Decision | Does::Both => true,
                    Does::HandOver => i % 256 == 255,
                    Does::Completion => false,
                };
                let mut seq = i;
                if awaited {
                    let appended = match api {
                        Api::Map => block_on(
                            &waker,
                            log.append(
                                "request.decision",
                                request.decision_fields(),
                                Wait::Written,
                            ),
                        ),
                        Api::Fields => block_on(
                            &waker,
                            log.append_fields(
                                "request.decision",
                                request.decision(),
                                Wait::Written,
                            ),
                        ),
                    };
                    seq = appended.expect("append").seq;
                    records += 1;
                } else if does == Does::HandOver {
                    match api {
                        Api::Map => block_on(
                            &waker,
                            log.submit("request.decision", request.decision_fields()),
                        ),
                        Api::Fields => block_on(
                            &waker,
                            log.submit_fields("request.decision", request.decision()),
                        ),
                    }
                    .expect("submit");
                    records += 1;
                }
                if does != Does::Decision {
                    match api {
                        Api::Map => block_on(
                            &waker,
                            log.submit("request.completion", request.completion_fields(seq)),
                        ),
                        Api::Fields => block_on(
                            &waker,
                            log.submit_fields("request.completion", request.completion(seq)),
                        ),
                    }
                    .expect("submit");
                    records += 1;
                }
            }
            let wall = started.elapsed();
            let caller = this_thread_cpu().saturating_sub(caller_cpu);
            // Submitted records may still be queued: one more append, answered after all of
            // them (the queue is FIFO), so that the writer's CPU time covers them.
            log.append_blocking("bench.flush", Map::new(), Wait::Written)
                .expect("flush");
            let writer_cpu = writer.cpu().saturating_sub(writer_cpu);
            log.close().expect("close the audit log");
            println!(
                "| {name} | {} | {records} | {:.2} | {:.2} | {:.2} | {:.2} |",
                match api {
                    Api::Map => "`Map`",
                    Api::Fields => "`Fields`",
                },
                per(wall.as_nanos() as u64, n),
                per(caller, n),
                per(writer_cpu, n),
                per(writer_cpu, records),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CPU per request under Tokio, as the gateway runs it.

/// Every thread of this process now: thread id → (name, CPU ns from `schedstat`).
fn threads_cpu() -> HashMap<String, (String, u64)> {
    let mut threads = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return threads;
    };
    for task in tasks.filter_map(Result::ok) {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let tid = task.file_name().to_string_lossy().into_owned();
        threads.insert(
            tid,
            (name.trim().to_string(), cpu_ns(&path.join("schedstat"))),
        );
    }
    threads
}

/// The process's user + system CPU time from `/proc/self/stat` (every thread, the exited ones
/// too), in ns; counted in ticks of 10 ms (USER_HZ is 100 on Linux).
fn process_cpu() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            Some(fields.iter().sum::<u64>() * 10_000_000)
        })
        .unwrap_or(0)
}

/// One gateway request after another on this task, until `total` have been taken: the decision
/// built as the struct, `append_fields(…, request_wait())` awaited, then the completion
/// `submit_fields`-ed (not waited for), as host/src/audit.rs does.
async fn gateway_requests(
    log: Arc<AuditLog>,
    requests: Arc<Vec<Request>>,
    next: Arc<AtomicU64>,
    total: u64,
) {
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return;
        }
        let request = &requests[i as usize % requests.len()];
        let appended = log
            .append_fields("request.decision", request.decision(), log.request_wait())
            .await
            .expect("append");
        log.submit_fields("request.completion", request.completion(appended.seq))
            .await
            .expect("submit");
    }
}

/// The baseline: `serde_json` + SHA-256 of a request's two records' fields (prebuilt `Map`s, as
/// in `request_path/baseline_serde_json_and_sha256`), on this thread: CPU ns per request.
fn baseline_two_records(requests: &[Request], n: u64) -> u64 {
    let maps: Vec<_> = requests
        .iter()
        .map(|r| (r.decision_fields(), r.completion_fields(7)))
        .collect();
    let mut out = Vec::with_capacity(4096);
    let cpu = this_thread_cpu();
    for i in 0..n {
        let (decision, completion) = &maps[i as usize % maps.len()];
        for fields in [decision, completion] {
            out.clear();
            serde_json::to_writer(&mut out, black_box(fields)).expect("serialise");
            black_box(Sha256::digest(&out));
        }
    }
    this_thread_cpu().saturating_sub(cpu) / n.max(1)
}

/// The format's own work for `n` gateway requests on this thread and nothing else: both
/// records built as `Fields`, written with their head, leaf-hashed onto the Merkle frontier,
/// `write(2)` of `RECORDS_PER_WRITE` lines at a time (about the batch the gateway's callers
/// write under load), `fdatasync` every 100 ms. CPU ns per request: what the log costs before
/// any queueing, waking or hand-off.
fn floor_two_records(requests: &[Request], n: u64) -> u64 {
    const RECORDS_PER_WRITE: u64 = 12;
    let (_dir, mut file) = temporary_append_file("floor.jsonl");
    let mut out = Vec::with_capacity(64 << 10);
    let mut frontier = Frontier::new();
    let mut prev = record::genesis(ORIGIN);
    let mut synced = Instant::now();
    let cpu = this_thread_cpu();
    for i in 0..n {
        let request = &requests[i as usize % requests.len()];
        let records = [
            (2 * i, "request.decision", request.decision()),
            (2 * i + 1, "request.completion", request.completion(2 * i)),
        ];
        for (seq, kind, fields) in records {
            let start = out.len();
            let head = Head {
                log: ORIGIN,
                seq,
                epoch: 1,
                ts: SystemTime::now(),
                prev,
                kind,
            };
            record::write_fields_line(&mut out, &head, &fields);
            let leaf = leaf_hash(&out[start..out.len() - 1]);
            frontier.push(leaf);
            prev = leaf;
        }
        if (2 * i + 2).is_multiple_of(RECORDS_PER_WRITE) {
            file.write_all(&out).expect("write");
            out.clear();
            if synced.elapsed() >= Duration::from_millis(100) {
                file.sync_data().expect("fdatasync");
                synced = Instant::now();
            }
        }
    }
    file.write_all(&out).expect("write");
    file.sync_data().expect("fdatasync");
    black_box(frontier.root());
    this_thread_cpu().saturating_sub(cpu) / n.max(1)
}

fn cpu_tokio(scale: Scale, wanted: &dyn Fn(&str) -> bool) {
    let tasks: Vec<usize> = [1, 64]
        .into_iter()
        .filter(|t| wanted(&format!("cpu/tokio/{t}")))
        .collect();
    if tasks.is_empty() {
        return;
    }
    let requests = requests(1024);
    let n = scale.tokio_requests;
    println!(
        "\n## cpu/tokio: a multi-thread runtime with 2 workers, batched 100 ms, {n} gateway requests per row (2 records each); CPU of every thread of the process from schedstat"
    );
    println!(
        "| row | tasks | wall µs/request | workers CPU µs/request | writer CPU µs/request | other threads CPU µs/request | total CPU µs/request | process CPU µs/request (/proc/self/stat) | records per write(2) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &tasks in &tasks {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = Arc::new(open_log(dir.path(), BATCHED, 1000));
        let writer = WriterThread::find().expect("the audit-writer thread");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-tokio")
            .build()
            .expect("a Tokio runtime");
        let next = Arc::new(AtomicU64::new(0));
        let (before, process_before, writes) = (threads_cpu(), process_cpu(), writer.writes());
        let started = Instant::now();
        runtime.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|_| {
                    tokio::spawn(gateway_requests(
                        log.clone(),
                        requests.clone(),
                        next.clone(),
                        n,
                    ))
                })
                .collect();
            for handle in handles {
                handle.await.expect("a request task");
            }
            // Completions may still be queued: one more append, answered after all of them
            // (the queue is FIFO), so that the writer's CPU time covers them.
            log.append_fields("bench.flush", Fields::new(), Wait::Written)
                .await
                .expect("flush");
        });
        let wall = started.elapsed();
        let (after, process_after) = (threads_cpu(), process_cpu());
        let writes = writer.writes().saturating_sub(writes);
        let (mut workers, mut writer_cpu, mut other) = (0, 0, 0);
        for (tid, (name, cpu)) in &after {
            let spent = cpu.saturating_sub(before.get(tid).map_or(0, |(_, c)| *c));
            match name.as_str() {
                "bench-tokio" => workers += spent,
                "audit-writer" => writer_cpu += spent,
                _ => other += spent,
            }
        }
        // A thread that ended during the row is missing from `after`: the stat column counts it.
        drop(runtime);
        log.close().expect("close the audit log");
        println!(
            "| `cpu/tokio/{tasks}` | {tasks} | {:.2} | {:.2} | {:.2} | {:.2} | **{:.2}** | {:.2} | {:.1} |",
            per(wall.as_nanos() as u64, n),
            per(workers, n),
            per(writer_cpu, n),
            per(other, n),
            per(workers + writer_cpu + other, n),
            per(process_after.saturating_sub(process_before), n),
            (2 * n + 1) as f64 / writes.max(1) as f64,
        );
    }
    let baseline = baseline_two_records(&requests, n.min(50_000));
    println!(
        "| baseline: `serde_json` + SHA-256 of the two records' fields (`Map`s), one thread | — | — | — | — | — | {:.2} | — | — |",
        baseline as f64 / 1000.0
    );
    let floor = floor_two_records(&requests, n.min(50_000));
    println!(
        "| floor: the format's own work (both records' `Fields`, head, leaf hash, Merkle frontier, `write(2)` of 12 lines, fdatasync every 100 ms), one thread | — | — | — | — | — | {:.2} | — | 12 |",
        floor as f64 / 1000.0
    );
}

// ---------------------------------------------------------------------------------------------
// Criterion: the pieces of the request path, and the writer's per-record staging.

fn request_path(c: &mut Criterion) {
    let requests = requests(1024);
    let fields = requests[0].decision_fields();
    let mut group = c.benchmark_group("request_path");
    group.throughput(Throughput::Elements(1));

    let mut i = 0usize;
    group.bench_function("decision_fields", |b| {
        b.iter(|| {
            i += 1;
            black_box(requests[i % requests.len()].decision_fields())
        })
    });

    group.bench_function("decision_fields_to_fields", |b| {
        b.iter(|| {
            i += 1;
            black_box(Fields::from_map(
                &requests[i % requests.len()].decision_fields(),
            ))
        })
    });

    group.bench_function("decision_struct_to_fields", |b| {
        b.iter(|| {
            i += 1;
            black_box(requests[i % requests.len()].decision())
        })
    });

    group.bench_function("decision_struct_serde_json", |b| {
        b.iter(|| {
            i += 1;
            black_box(serde_json::to_vec(
                &requests[i % requests.len()].decision_record(),
            ))
        })
    });

    let mut out = Vec::with_capacity(4096);
    group.bench_function("baseline_serde_json_and_sha256", |b| {
        b.iter(|| {
            out.clear();
            serde_json::to_writer(&mut out, black_box(&fields)).expect("serialise");
            black_box(Sha256::digest(&out))
        })
    });

    let mut frontier = Frontier::new();
    let mut prev = record::genesis(ORIGIN);
    let mut seq = 0u64;
    group.bench_function("writer_stage_write_line_and_leaf_hash", |b| {
        b.iter(|| {
            out.clear();
            record::write_line(
                &mut out,
                &Head {
                    log: ORIGIN,
                    seq,
                    epoch: 1,
                    ts: SystemTime::now(),
                    prev,
                    kind: "request.decision",
                },
                black_box(&fields),
            );
            prev = leaf_hash(&out[..out.len() - 1]);
            frontier.push(prev);
            seq += 1;
        })
    });

    let decision = requests[0].decision();
    group.bench_function("writer_stage_write_fields_line_and_leaf_hash", |b| {
        b.iter(|| {
            out.clear();
            record::write_fields_line(
                &mut out,
                &Head {
                    log: ORIGIN,
                    seq,
                    epoch: 1,
                    ts: SystemTime::now(),
                    prev,
                    kind: "request.decision",
                },
                black_box(&decision),
            );
            prev = leaf_hash(&out[..out.len() - 1]);
            frontier.push(prev);
            seq += 1;
        })
    });

    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = open_log(dir.path(), BATCHED, 1000);
    let waker = thread_waker();
    group.bench_function("append_fields_written_one_producer", |b| {
        b.iter(|| {
            i += 1;
            let fields = requests[i % requests.len()].decision();
            block_on(
                &waker,
                log.append_fields("request.decision", fields, Wait::Written),
            )
            .expect("append")
        })
    });
    group.bench_function("submit_fields_one_producer", |b| {
        b.iter(|| {
            i += 1;
            let fields = requests[i % requests.len()].completion(7);
            block_on(&waker, log.submit_fields("request.completion", fields)).expect("submit")
        })
    });
    group.bench_function("append_written_one_producer", |b| {
        b.iter(|| {
            i += 1;
            let fields = requests[i % requests.len()].decision_fields();
            block_on(
                &waker,
                log.append("request.decision", fields, Wait::Written),
            )
            .expect("append")
        })
    });
    group.bench_function("submit_one_producer", |b| {
        b.iter(|| {
            i += 1;
            let fields = requests[i % requests.len()].completion_fields(7);
            block_on(&waker, log.submit("request.completion", fields)).expect("submit")
        })
    });
    group.finish();
    log.close().expect("close the audit log");
}

// ---------------------------------------------------------------------------------------------
// Verify.

/// SHA-256 of the segment files, read in 64 KiB chunks: the floor of any verifier.
fn sha256_files(files: &[PathBuf]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 << 10];
    for path in files {
        let mut file = File::open(path).expect("a segment");
        loop {
            let n = file.read(&mut buffer).expect("read");
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    hasher.finalize().into()
}

/// The verifier's core without its checks: parse every line, follow `prev`, rebuild the tree.
fn parse_and_rehash(files: &[PathBuf]) -> (u64, [u8; 32]) {
    let mut frontier: Option<Frontier> = None;
    let mut prev: Option<[u8; 32]> = None;
    let mut line = Vec::with_capacity(4096);
    for path in files {
        let mut reader = BufReader::with_capacity(64 << 10, File::open(path).expect("a segment"));
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).expect("read") == 0 {
                break;
            }
            let record = Record::parse(&line[..line.len() - 1]).expect("a record");
            assert!(prev.is_none_or(|p| p == record.prev), "chain");
            prev = Some(record.leaf);
            frontier.get_or_insert_with(Frontier::new).push(record.leaf);
        }
    }
    let frontier = frontier.unwrap_or_default();
    (frontier.size(), frontier.root())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn verify_speed(scale: Scale) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let key = SigningKey::generate(ORIGIN).expect("a signing key");
    let trusted = vec![key.verifier()];
    let requests = requests(1024);
    let written = Instant::now();
    {
        let log = open_log_with(dir.path(), key, BATCHED, 1000, 16 << 20);
        let waker = thread_waker();
        for i in 0..scale.verify_records {
            let fields = requests[i as usize % requests.len()].decision();
            block_on(&waker, log.submit_fields("request.decision", fields)).expect("submit");
        }
        log.close().expect("close the audit log");
    }
    let written = written.elapsed();
    let files: Vec<PathBuf> = segment::list(dir.path())
        .expect("the segments")
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let bytes: u64 = files
        .iter()
        .map(|p| std::fs::metadata(p).expect("a segment").len())
        .sum();
    let checkpoints = std::fs::read_to_string(dir.path().join(segment::CHECKPOINTS))
        .expect("the checkpoints")
        .lines()
        .count();

    let (mut t_sha, mut t_parse, mut t_verify) = (Vec::new(), Vec::new(), Vec::new());
    let mut records = 0;
    for _ in 0..scale.verify_rounds {
        let t = Instant::now();
        black_box(sha256_files(&files));
        t_sha.push(t.elapsed());

        let t = Instant::now();
        let (size, root) = parse_and_rehash(&files);
        t_parse.push(t.elapsed());

        let t = Instant::now();
        let report =
            verify::verify(verify::Options::new(dir.path(), trusted.clone())).expect("verify runs");
        t_verify.push(t.elapsed());
        assert!(
            report.passed(),
            "the log verifies:\n{}",
            report.render_text()
        );
        assert_eq!(report.records, size, "verify read every record");
        assert_eq!(report.root, Some(root), "the same root");
        assert_eq!(report.bytes, bytes, "verify read every byte");
        records = report.records;
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "\n## verify: {records} records, {mb:.1} MB in {} segments, {checkpoints} checkpoints (log written in {:.1} s), median of {} interleaved rounds, files in the page cache",
        files.len(),
        written.as_secs_f64(),
        scale.verify_rounds
    );
    println!("| what | time | records/s | MB/s | time / SHA-256's |");
    println!("|---|---|---|---|---|");
    let sha = median(t_sha.clone()).as_secs_f64();
    for (name, times) in [
        ("SHA-256 of the segment files (baseline)", t_sha),
        (
            "parse + chain + Merkle frontier (Record::parse, no checks)",
            t_parse,
        ),
        ("verify::verify (every check)", t_verify),
    ] {
        let t = median(times).as_secs_f64();
        println!(
            "| {name} | {:.0} ms | {:.0} | {:.0} | {:.1}× |",
            t * 1000.0,
            records as f64 / t,
            mb / t,
            t / sha,
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
    let wanted = |section: &str| {
        filter
            .as_deref()
            .is_none_or(|f| section.contains(f) || f.starts_with(section))
    };
    let scale = Scale::new(bench);
    throughput(scale, &wanted);
    if wanted("cpu") {
        if wanted("cpu/thread") {
            cpu(scale);
        }
        cpu_tokio(scale, &wanted);
    }
    if wanted("request_path") {
        let mut criterion = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        request_path(&mut criterion);
        criterion.final_summary();
    }
    if wanted("verify") {
        verify_speed(scale);
    }
}
