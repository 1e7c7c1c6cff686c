//! The verifier against hand-built logs. A fixture writes valid logs exactly per the on-disk
//! format of `lib.rs` (so it doubles as an independent check of the writer); each tamper case
//! of the design is then applied to the files and must produce its specific finding code.
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use portcullis_audit::merkle::{self, Frontier, Hash};
use portcullis_audit::note::{Checkpoint, SignedCheckpoint, SigningKey, VerifierKey};
use portcullis_audit::record::{self, Head, Record};
use portcullis_audit::segment::{self, CheckpointLine};
use portcullis_audit::verify::{self, Code, Options, Report, Severity, VerifyError};
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

const ORIGIN: &str = "test.portcullis/verify";
const OTHER: &str = "other.portcullis/verify";

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Builds a valid log in memory, as the writer does, and writes it to a temporary directory.
struct Fixture {
    origin: String,
    key: SigningKey,
    trusted: Vec<VerifierKey>,
    /// Segment `n` is `segments[n - 1]`.
    segments: Vec<Vec<u8>>,
    /// Whether the last segment ended with `segment.close` (the next record opens a new one).
    closed: bool,
    checkpoints: Vec<u8>,
    frontier: Frontier,
    prev: Hash,
    seq: u64,
    epoch: u64,
    ts: SystemTime,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A log with its first start: `segment.open` (seq 0) and `gateway.start` (seq 1).
    fn new() -> Self {
        Self::with_origin(ORIGIN)
    }

    fn with_origin(origin: &str) -> Self {
        let mut fixture = Self::empty(origin);
        fixture.start();
        fixture
    }

    /// No record yet.
    fn empty(origin: &str) -> Self {
        let key = SigningKey::generate(origin).expect("a key");
        Fixture {
            origin: origin.to_string(),
            trusted: vec![key.verifier()],
            key,
            segments: Vec::new(),
            closed: true,
            checkpoints: Vec::new(),
            frontier: Frontier::new(),
            prev: record::genesis(origin),
            seq: 0,
            epoch: 0,
            ts: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A new epoch: `gateway.start`.
    fn start(&mut self) {
        self.epoch += 1;
        self.record(
            "gateway.start",
            json!({"instance": "gw-1", "version": "0.1.0"}),
        );
    }

    /// `gateway.stop` and the shutdown checkpoint.
    fn stop(&mut self) {
        self.record("gateway.stop", json!({"reason": "signal"}));
        self.checkpoint();
    }

    /// Append a record, opening a segment first if the last one was closed.
    fn record(&mut self, kind: &str, fields: Value) -> u64 {
        if self.closed {
            self.open_segment();
        }
        self.raw(kind, obj(fields))
    }

    fn raw(&mut self, kind: &str, fields: Map<String, Value>) -> u64 {
        self.ts += Duration::from_millis(1);
        let mut line = Vec::new();
        record::write_line(
            &mut line,
            &Head {
                log: &self.origin,
                seq: self.seq,
                epoch: self.epoch,
                ts: self.ts,
                prev: self.prev,
                kind,
            },
            &fields,
        );
        let leaf = merkle::leaf_hash(&line[..line.len() - 1]);
        self.frontier.push(leaf);
        self.prev = leaf;
        self.seq += 1;
        self.segments
            .last_mut()
            .expect("an open segment")
            .extend_from_slice(&line);
        self.seq - 1
    }

    fn open_segment(&mut self) {
        self.segments.push(Vec::new());
        self.closed = false;
        let number = self.segments.len() as u64;
        let frontier = json!({
            "size": self.frontier.size(),
            "hashes": self.frontier.hashes().iter().map(record::encode_hash).collect::<Vec<_>>(),
        });
        let key = self.key.verifier().to_string();
        self.raw(
            "segment.open",
            obj(json!({"segment": number, "frontier": frontier, "key": key})),
        );
    }

    /// `segment.close` and the rotation checkpoint; the next record opens the next segment.
    fn rotate_segment(&mut self) {
        if self.closed {
            return;
        }
        let number = self.segments.len() as u64;
        self.raw(
            "segment.close",
            obj(json!({"segment": number, "next": number + 1})),
        );
        self.closed = true;
        self.checkpoint();
    }

    fn requests(&mut self, n: usize) {
        for _ in 0..n {
            let route = format!("route-{}", self.seq);
            self.record(
                "request.decision",
                json!({"route": route, "decision": "allow", "agent": "agent-7", "status": 200}),
            );
        }
    }

    fn heartbeat(&mut self) {
        self.record("heartbeat", json!({}));
    }

    /// A checkpoint at the current size, signed by the current key.
    fn checkpoint(&mut self) {
        let note = self.note(&[&self.key]);
        self.push_checkpoint(note);
    }

    /// A note over the current size and root, signed by `keys`.
    fn note(&self, keys: &[&SigningKey]) -> String {
        Checkpoint {
            origin: self.origin.clone(),
            size: self.frontier.size(),
            root: self.frontier.root(),
        }
        .sign(keys)
    }

    fn push_checkpoint(&mut self, note: String) {
        let line = CheckpointLine {
            ts: record::format_ts(self.ts),
            segment: self.segments.len() as u64,
            note,
        };
        let mut text = serde_json::to_vec(&line).expect("json");
        text.push(b'\n');
        self.checkpoints.extend_from_slice(&text);
    }

    /// `key.rotated`, then a checkpoint signed by the new and the old key. Returns the old key.
    fn rotate_key(&mut self) -> SigningKey {
        let new = SigningKey::generate(&self.origin).expect("a key");
        let fields =
            json!({"old": self.key.verifier().to_string(), "new": new.verifier().to_string()});
        self.record("key.rotated", fields);
        let note = self.note(&[&new, &self.key]);
        self.push_checkpoint(note);
        std::mem::replace(&mut self.key, new)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Write the segments and the checkpoint file (replacing what is there).
    fn write(&self) -> PathBuf {
        let dir = self.path();
        for (_, path) in segment::list(&dir).expect("list") {
            std::fs::remove_file(path).expect("remove");
        }
        for (index, bytes) in self.segments.iter().enumerate() {
            let path = dir.join(segment::name(index as u64 + 1));
            std::fs::write(path, bytes).expect("write segment");
        }
        std::fs::write(dir.join(segment::CHECKPOINTS), &self.checkpoints).expect("write");
        dir
    }

    /// Options against the log's first key, judged a second after the last record.
    fn options(&self) -> Options {
        let mut options = Options::new(self.path(), self.trusted.clone());
        options.now = self.ts + Duration::from_secs(1);
        options
    }
}

/// Three segments, 19 records, five checkpoints (at 5, 9, 13, 15 and 19), a heartbeat, a stop.
fn standard() -> Fixture {
    standard_with_origin(ORIGIN)
}

fn standard_with_origin(origin: &str) -> Fixture {
    let mut f = Fixture::with_origin(origin); // 0 open, 1 start
    f.requests(3); // 2, 3, 4
    f.checkpoint(); // 5
    f.heartbeat(); // 5
    f.requests(2); // 6, 7
    f.rotate_segment(); // 8 close, checkpoint 9
    f.requests(3); // 9 open, 10, 11, 12
    f.checkpoint(); // 13
    f.requests(1); // 13
    f.rotate_segment(); // 14 close, checkpoint 15
    f.requests(2); // 15 open, 16, 17
    f.stop(); // 18 stop, checkpoint 19
    f
}

fn run(options: Options) -> Report {
    verify::verify(options).expect("verification runs")
}

fn failure_codes(report: &Report) -> Vec<Code> {
    report
        .codes()
        .into_iter()
        .filter(|c| c.severity() == Severity::Failure)
        .collect()
}

#[track_caller]
/// The lines of the findings with `code`, in the report's order.
fn finding_lines(report: &Report, code: Code) -> Vec<Option<u64>> {
    report
        .findings
        .iter()
        .filter(|f| f.code == code)
        .map(|f| f.line)
        .collect()
}

fn assert_fails_with(report: &Report, code: Code) {
    assert!(
        report.has(code),
        "expected {}:\n{}",
        code.as_str(),
        report.render_text()
    );
    assert!(!report.passed(), "{}", report.render_text());
    assert_eq!(report.exit_code(false), 1);
    assert_eq!(report.exit_code(true), 1);
}

#[track_caller]
fn assert_warns_with(report: &Report, code: Code) {
    assert!(
        report.has(code),
        "expected {}:\n{}",
        code.as_str(),
        report.render_text()
    );
    assert!(report.passed(), "{}", report.render_text());
    assert_eq!(report.exit_code(false), 0);
    assert_eq!(report.exit_code(true), 2);
}

#[track_caller]
fn assert_clean(report: &Report) {
    assert!(report.findings.is_empty(), "{}", report.render_text());
    assert!(report.passed());
    assert_eq!(report.exit_code(false), 0);
    assert_eq!(report.exit_code(true), 0);
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(segment::name(n))
}

/// The lines of segment `n`, each with its `\n`.
fn lines(dir: &Path, n: u64) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(segment_path(dir, n)).expect("read segment");
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn set_lines(dir: &Path, n: u64, lines: &[Vec<u8>]) {
    std::fs::write(segment_path(dir, n), lines.concat()).expect("write segment");
}

fn checkpoint_lines(dir: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(dir.join(segment::CHECKPOINTS)).expect("read checkpoints");
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn set_checkpoint_lines(dir: &Path, lines: &[Vec<u8>]) {
    std::fs::write(dir.join(segment::CHECKPOINTS), lines.concat()).expect("write checkpoints");
}

/// A checkpoint line signed by the fixture's key for `size` and `root`, whatever the records say.
fn signed_checkpoint_line(fx: &Fixture, size: u64, root: Hash) -> Vec<u8> {
    let note = Checkpoint {
        origin: ORIGIN.into(),
        size,
        root,
    }
    .sign(&[&fx.key]);
    let mut line = serde_json::to_vec(&CheckpointLine {
        ts: record::format_ts(fx.ts),
        segment: fx.segments.len() as u64,
        note,
    })
    .expect("json");
    line.push(b'\n');
    line
}

/// Record 3 edited, then every later `prev`, frontier and checkpoint recomputed with the real
/// key: what a compromised writer could do. Only something held elsewhere tells.
fn rewrite_from_seq_3(fx: &Fixture, dir: &Path) {
    let mut seg = lines(dir, 1);
    edit_one_byte(&mut seg[3]);
    set_lines(dir, 1, &seg);
    rechain(dir, false, true);
    resign(dir, &fx.key);
}

/// The fixture's options with `anchor`.
fn anchored(fx: &Fixture, anchor: &Path) -> Options {
    let mut options = fx.options();
    options.anchor = Some(anchor.to_path_buf());
    options
}

fn checkpoint_size(line: &[u8]) -> u64 {
    let line: CheckpointLine = serde_json::from_slice(line).expect("a checkpoint line");
    SignedCheckpoint::parse(&line.note)
        .expect("a note")
        .checkpoint
        .size
}

/// The leaf of every line of every segment, in order.
fn leaves(dir: &Path) -> Vec<Hash> {
    let mut out = Vec::new();
    for (_, path) in segment::list(dir).expect("list") {
        let bytes = std::fs::read(path).expect("read");
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            out.push(merkle::leaf_hash(line.strip_suffix(b"\n").unwrap_or(line)));
        }
    }
    out
}

/// Change `route-N` of a record line into `route-N` with its first digit bumped: one byte.
fn edit_one_byte(line: &mut [u8]) {
    let at = line
        .windows(6)
        .position(|w| w == b"route-")
        .expect("a request line")
        + 6;
    line[at] = if line[at] == b'9' { b'8' } else { line[at] + 1 };
}

/// What an attacker with write access but no key does after editing: recompute every `prev`
/// (and with `renumber`, every `seq`; with `frontiers`, every `segment.open` frontier).
fn rechain(dir: &Path, renumber: bool, frontiers: bool) {
    let mut prev: Option<Hash> = None;
    let mut frontier = Frontier::new();
    let mut seq = 0u64;
    for (_, path) in segment::list(dir).expect("list") {
        let bytes = std::fs::read(&path).expect("read");
        let mut out = Vec::new();
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let mut map: Map<String, Value> = serde_json::from_slice(line).expect("a record");
            let origin = map["log"].as_str().expect("log").to_string();
            let previous = prev.unwrap_or_else(|| record::genesis(&origin));
            if renumber {
                map.insert("seq".into(), Value::from(seq));
            }
            map.insert("prev".into(), Value::from(record::encode_hash(&previous)));
            if frontiers && map["type"] == "segment.open" {
                let hashes: Vec<String> =
                    frontier.hashes().iter().map(record::encode_hash).collect();
                map.insert(
                    "frontier".into(),
                    json!({"size": frontier.size(), "hashes": hashes}),
                );
            }
            let bytes = serde_json::to_vec(&Value::Object(map)).expect("json");
            let leaf = merkle::leaf_hash(&bytes);
            frontier.push(leaf);
            prev = Some(leaf);
            seq += 1;
            out.extend_from_slice(&bytes);
            out.push(b'\n');
        }
        std::fs::write(&path, out).expect("write");
    }
}

/// Re-sign every checkpoint over the records now in `dir`, with `key`.
fn resign(dir: &Path, key: &SigningKey) {
    let leaves = leaves(dir);
    let mut out = Vec::new();
    for line in checkpoint_lines(dir) {
        let mut line: CheckpointLine = serde_json::from_slice(&line).expect("a checkpoint line");
        let claim = SignedCheckpoint::parse(&line.note)
            .expect("a note")
            .checkpoint;
        let size = claim.size.min(leaves.len() as u64);
        line.note = Checkpoint {
            origin: claim.origin,
            size,
            root: merkle::root(&leaves[..size as usize]),
        }
        .sign(&[key]);
        out.extend(serde_json::to_vec(&line).expect("json"));
        out.push(b'\n');
    }
    std::fs::write(dir.join(segment::CHECKPOINTS), out).expect("write");
}

/// Keep the first `keep` records (across segments, dropping emptied segments) and, with
/// `drop_checkpoints`, only the checkpoints that do not claim more.
fn truncate(dir: &Path, keep: usize, drop_checkpoints: bool) {
    let mut left = keep;
    for (_, path) in segment::list(dir).expect("list") {
        let bytes = std::fs::read(&path).expect("read");
        let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
        if left == 0 {
            std::fs::remove_file(&path).expect("remove");
            continue;
        }
        let n = lines.len().min(left);
        left -= n;
        std::fs::write(&path, lines[..n].concat()).expect("write");
    }
    if drop_checkpoints {
        let kept: Vec<Vec<u8>> = checkpoint_lines(dir)
            .into_iter()
            .filter(|l| checkpoint_size(l) <= keep as u64)
            .collect();
        set_checkpoint_lines(dir, &kept);
    }
}

fn copy_files(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

fn replace_with_copy(dir: &Path, copy: &Path) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::remove_file(entry.path()).expect("remove");
        }
    }
    copy_files(copy, dir);
}

// ---------------------------------------------------------------------------------------------
// Valid logs

#[test]
fn a_clean_log_passes_with_exit_code_zero() {
    let fx = standard();
    let dir = fx.write();
    let report = run(fx.options());
    assert_clean(&report);
    assert_eq!(report.origin.as_deref(), Some(ORIGIN));
    assert_eq!(report.segments, 3);
    assert_eq!(report.records, 19);
    assert_eq!(report.size, 19);
    assert_eq!(report.checkpoints, 5);
    assert_eq!(report.covered, 19);
    assert_eq!(report.heartbeats, 1);
    assert_eq!(report.epochs, 1);
    assert_eq!(report.recoveries, 0);
    assert_eq!(report.keys.len(), 1);
    assert_eq!(report.root, Some(merkle::root(&leaves(&dir))));
    let bytes: u64 = fx.segments.iter().map(|s| s.len() as u64).sum();
    assert_eq!(report.bytes, bytes);
    let text = report.render_text();
    for area in [
        "origin:",
        "keys:",
        "segments:",
        "records:",
        "chain:",
        "merkle:",
        "checkpoints:",
        "anchors:",
        "heartbeats:",
        "recoveries:",
        "schema:",
        "state:",
    ] {
        assert!(text.contains(area), "{area} in\n{text}");
    }
    assert!(text.contains("result:      PASS\n"), "{text}");
    let json = report.to_json();
    assert_eq!(json["passed"], true);
    assert_eq!(json["records"], 19);
    assert_eq!(json["summary"]["chain"], "ok");
    assert_eq!(json["findings"], json!([]));
}

#[test]
fn fixture_lines_are_byte_for_byte_a_compact_re_serialisation() {
    // What makes the `rechain` attacker below exact: the format is serde_json's compact form
    // with the head first, so a re-serialised parsed line is the line itself.
    let fx = standard();
    let dir = fx.write();
    for n in 1..=3 {
        for line in lines(&dir, n) {
            let line = line.strip_suffix(b"\n").expect("terminated");
            let record = Record::parse(line).expect("a record");
            let again = serde_json::to_vec(&Value::Object(record.fields)).expect("json");
            assert_eq!(again, line);
        }
    }
}

#[test]
fn a_warnings_only_log_exits_two_under_strict() {
    let mut fx = Fixture::new();
    fx.requests(3);
    fx.checkpoint();
    fx.requests(2); // after the last checkpoint
    fx.write();
    let report = run(fx.options());
    assert_warns_with(&report, Code::TailUnsigned);
    assert_eq!(report.warnings(), 1, "{}", report.render_text());
    assert_eq!(report.covered, 5);
    assert!(report.render_text().contains("PASS with 1 warning"));
}

#[test]
fn a_legitimate_key_rotation_passes() {
    let mut fx = Fixture::new();
    fx.requests(2);
    fx.checkpoint();
    let old = fx.rotate_key();
    fx.requests(2);
    fx.rotate_segment();
    fx.requests(1);
    fx.stop();
    fx.write();
    // The auditor still pins only the first key: the co-signed rotation carries trust over.
    assert_eq!(fx.trusted, vec![old.verifier()]);
    let report = run(fx.options());
    assert_clean(&report);
    assert_eq!(report.rotations, 1);
    assert_eq!(report.keys.len(), 2, "{:?}", report.keys);
}

#[test]
fn a_legitimate_sequence_of_restarts_recoveries_and_rotations_passes() {
    let mut fx = Fixture::new();
    fx.requests(2);
    fx.checkpoint();
    // A crash; at the next start recovery cut a torn line and says so.
    fx.epoch += 1;
    fx.record(
        "log.recovered",
        json!({"file": segment::name(1), "offset": 1234, "bytes": 17,
               "quarantine": "segment-000001.jsonl.1234", "reason": "torn line"}),
    );
    fx.record("gateway.start", json!({"instance": "gw-1"}));
    fx.requests(2);
    fx.rotate_segment();
    fx.stop();
    fx.start();
    fx.heartbeat();
    fx.stop();
    fx.write();
    let report = run(fx.options());
    assert_warns_with(&report, Code::LogRecovered);
    assert_eq!(report.codes(), vec![Code::LogRecovered]);
    assert_eq!(report.recoveries, 1);
    assert_eq!(report.epochs, 3);
}

// ---------------------------------------------------------------------------------------------
// Records: edits, deletions, reordering, forgeries (tamper cases 1 to 6)

#[test]
fn one_edited_byte_breaks_the_chain_at_the_next_record() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 1);
    edit_one_byte(&mut seg[3]); // seq 3
    set_lines(&dir, 1, &seg);
    let report = run(fx.options());
    assert_fails_with(&report, Code::ChainBroken);
    let broken = report
        .findings
        .iter()
        .find(|f| f.code == Code::ChainBroken)
        .expect("a chain-broken finding");
    assert_eq!(broken.file.as_deref(), Some("segment-000001.jsonl"));
    assert_eq!(broken.line, Some(5));
    assert_eq!(broken.seq, Some(4));
    let offset: usize = seg[..4].iter().map(Vec::len).sum();
    assert_eq!(broken.offset, Some(offset as u64));
    assert!(report.has(Code::CheckpointRootMismatch));
}

#[test]
fn an_edited_record_with_every_later_prev_recomputed_fails_only_at_checkpoints() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 2);
    edit_one_byte(&mut seg[2]); // seq 11
    set_lines(&dir, 2, &seg);
    rechain(&dir, false, true);
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointRootMismatch);
    assert_eq!(failure_codes(&report), vec![Code::CheckpointRootMismatch]);
    assert_eq!(report.covered, 9, "checkpoints before the edit still hold");
}

#[test]
fn a_deleted_record_is_a_seq_gap_and_a_broken_chain() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 2);
    seg.remove(2); // seq 11
    set_lines(&dir, 2, &seg);
    let report = run(fx.options());
    assert_fails_with(&report, Code::SeqGap);
    assert_fails_with(&report, Code::ChainBroken);
    let gap = report
        .findings
        .iter()
        .find(|f| f.code == Code::SeqGap)
        .expect("a seq-gap finding");
    assert_eq!(gap.seq, Some(12));
}

#[test]
fn a_deleted_renumbered_and_rechained_record_fails_only_at_checkpoints() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 2);
    seg.remove(2); // seq 11
    set_lines(&dir, 2, &seg);
    rechain(&dir, true, true);
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointRootMismatch);
    assert_fails_with(&report, Code::CheckpointOverClaims);
    assert_eq!(
        failure_codes(&report),
        vec![Code::CheckpointOverClaims, Code::CheckpointRootMismatch]
    );
}

#[test]
fn swapped_records_are_out_of_order() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 1);
    seg.swap(2, 3);
    set_lines(&dir, 1, &seg);
    let report = run(fx.options());
    assert_fails_with(&report, Code::SeqOutOfOrder);
    assert_fails_with(&report, Code::ChainBroken);
}

#[test]
fn a_duplicated_record_is_out_of_order() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 1);
    seg.insert(3, seg[2].clone());
    set_lines(&dir, 1, &seg);
    let report = run(fx.options());
    assert_fails_with(&report, Code::SeqOutOfOrder);
}

#[test]
fn a_forged_record_in_place_breaks_the_chain_after_it() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 1);
    let original =
        Record::parse(seg[3].strip_suffix(b"\n").expect("terminated")).expect("a record");
    let mut forged = Vec::new();
    record::write_line(
        &mut forged,
        &Head {
            log: ORIGIN,
            seq: original.seq,
            epoch: original.epoch,
            ts: original.time().expect("a time"),
            prev: original.prev,
            kind: "request.decision",
        },
        &obj(json!({"route": "forged", "decision": "allow", "agent": "agent-7", "status": 200})),
    );
    seg[3] = forged;
    set_lines(&dir, 1, &seg);
    let report = run(fx.options());
    assert_fails_with(&report, Code::ChainBroken);
    assert!(!report.has(Code::SeqGap) && !report.has(Code::SeqOutOfOrder));
}

#[test]
fn a_forged_record_appended_after_the_last_checkpoint_is_at_most_unsigned() {
    // Without the key, a well-chained append is all an attacker can do: it is reported as
    // unsigned, and an anchor or saved state taken later would pin what really followed.
    let mut fx = standard();
    fx.write();
    fx.requests(1);
    let forged = fx.segments.last().expect("a segment").clone();
    let dir = fx.path();
    std::fs::write(segment_path(&dir, 3), forged).expect("write");
    let report = run(fx.options());
    assert_warns_with(&report, Code::TailUnsigned);
}

// ---------------------------------------------------------------------------------------------
// Truncation and torn writes (tamper cases 7 and 8)

#[test]
fn a_truncated_tail_with_its_checkpoints_dropped_warns_of_a_stale_heartbeat() {
    let fx = standard();
    let dir = fx.write();
    let mut options = fx.options();
    options.now = fx.ts + Duration::from_secs(300);
    // The original ends with gateway.stop: not stale however old.
    assert_clean(&run(options));

    truncate(&dir, 17, true);
    let mut options = fx.options();
    options.now = fx.ts + Duration::from_secs(300);
    let report = run(options);
    assert_warns_with(&report, Code::StaleHeartbeat);
    let stale = report
        .findings
        .iter()
        .find(|f| f.code == Code::StaleHeartbeat)
        .expect("stale-heartbeat");
    assert_eq!(stale.seq, Some(16));
}

#[test]
fn a_truncated_tail_with_its_checkpoints_kept_over_claims() {
    let fx = standard();
    let dir = fx.write();
    truncate(&dir, 17, false);
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointOverClaims);
}

#[test]
fn a_truncated_tail_is_anchor_ahead_against_an_anchor() {
    let fx = standard();
    let dir = fx.write();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let anchor = elsewhere.path().join("anchor.jsonl");
    std::fs::copy(dir.join(segment::CHECKPOINTS), &anchor).expect("copy");
    let report = run(anchored(&fx, &anchor));
    assert_clean(&report);
    assert_eq!(report.anchors, 5);

    truncate(&dir, 17, true);
    let report = run(anchored(&fx, &anchor));
    assert_fails_with(&report, Code::AnchorAhead);
}

#[test]
fn an_anchor_of_plain_notes_is_read_and_a_rewritten_log_mismatches_it() {
    let fx = standard();
    let dir = fx.write();
    let notes: Vec<String> = checkpoint_lines(&dir)
        .iter()
        .map(|l| {
            serde_json::from_slice::<CheckpointLine>(l)
                .expect("a line")
                .note
        })
        .collect();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let anchor = elsewhere.path().join("anchor.txt");
    std::fs::write(&anchor, notes.join("\n")).expect("write");
    let report = run(anchored(&fx, &anchor));
    assert_clean(&report);
    assert_eq!(report.anchors, 5);

    // Rewritten with the real key (a compromised writer): only the anchor held elsewhere tells.
    rewrite_from_seq_3(&fx, &dir);
    assert_clean(&run(fx.options()));
    let report = run(anchored(&fx, &anchor));
    assert_fails_with(&report, Code::AnchorMismatch);
}

/// The anchor file is read alongside the records like the checkpoint file: one in another order
/// is judged note by note all the same, each against the root at its own size.
#[test]
fn an_anchor_file_in_any_order_is_judged_at_each_notes_size() {
    let fx = standard();
    let dir = fx.write();
    let mut cps = checkpoint_lines(&dir);
    cps.reverse();
    cps.insert(2, b"  \n".to_vec());
    let mut text = cps.concat();
    text.pop();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let anchor = elsewhere.path().join("anchor.jsonl");
    std::fs::write(&anchor, text).expect("write");
    let report = run(anchored(&fx, &anchor));
    assert_clean(&report);
    assert_eq!(report.anchors, 5);

    // Every anchor from size 4 on mismatches.
    rewrite_from_seq_3(&fx, &dir);
    let report = run(anchored(&fx, &anchor));
    assert_eq!(failure_codes(&report), vec![Code::AnchorMismatch]);
    let mismatched = finding_lines(&report, Code::AnchorMismatch);
    assert_eq!(
        mismatched,
        vec![Some(1), Some(2), Some(4), Some(5), Some(6)]
    );
}

/// More checkpoints than the verifier reads ahead at once (256), with forged notes at the
/// edges of its batches, and a rotation to a key the trust file does not pin (its signatures
/// are checked as each note is judged, not ahead): every note is judged at its own line, as
/// when the file is read one note at a time.
#[test]
fn notes_read_ahead_are_each_judged_at_their_own_line() {
    let mut fx = Fixture::new();
    let attacker = SigningKey::generate(ORIGIN).expect("a key");
    let by_attacker = [0, 150];
    let spoiled = [254, 255, 256, 290];
    let mut forged_lines = Vec::new();
    for i in 0..300 {
        fx.requests(1);
        if i == 280 {
            fx.rotate_key();
        }
        let note = if by_attacker.contains(&i) {
            fx.note(&[&attacker])
        } else if spoiled.contains(&i) {
            spoil_last_signature(&fx.note(&[&fx.key]))
        } else if i % 7 == 0 {
            fx.note(&[&attacker, &fx.key]) // co-signed by a stranger: still trusted
        } else {
            fx.note(&[&fx.key])
        };
        fx.push_checkpoint(note);
        if by_attacker.contains(&i) || spoiled.contains(&i) {
            forged_lines.push(Some(checkpoint_count(&fx)));
        }
    }
    fx.stop();
    let dir = fx.write();
    let report = run(fx.options());
    assert_eq!(failure_codes(&report), vec![Code::CheckpointUntrusted]);
    let untrusted = finding_lines(&report, Code::CheckpointUntrusted);
    assert_eq!(untrusted, forged_lines);
    assert_eq!(report.checkpoints, checkpoint_count(&fx));

    // The same notes as an anchor file, read ahead the same way (judged against every key
    // trusted by the end of the log).
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let anchor = elsewhere.path().join("anchor.jsonl");
    std::fs::copy(dir.join(segment::CHECKPOINTS), &anchor).expect("copy");
    let report = run(anchored(&fx, &anchor));
    let untrusted_anchors = finding_lines(&report, Code::AnchorUntrusted);
    assert_eq!(untrusted_anchors, forged_lines);
}

fn checkpoint_count(fx: &Fixture) -> u64 {
    fx.checkpoints.iter().filter(|&&b| b == b'\n').count() as u64
}

/// `note` with one character of its last signature changed: a line that names its key, with a
/// signature that does not verify.
fn spoil_last_signature(note: &str) -> String {
    let mut chars: Vec<char> = note.chars().collect();
    let at = chars.len() - 6; // in the signature's base64, before its padding and the newline
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[test]
fn an_unparsable_or_untrusted_anchor_fails() {
    let fx = standard();
    let dir = fx.write();
    let cps = checkpoint_lines(&dir);
    let stranger = SigningKey::generate(ORIGIN).expect("a key");
    let claim = {
        let line: CheckpointLine = serde_json::from_slice(&cps[1]).expect("a line");
        SignedCheckpoint::parse(&line.note)
            .expect("a note")
            .checkpoint
    };
    let mut forged = serde_json::to_vec(&CheckpointLine {
        ts: record::format_ts(fx.ts),
        segment: 1,
        note: claim.sign(&[&stranger]),
    })
    .expect("json");
    forged.push(b'\n');
    let text = [cps[0].clone(), b"not json\n".to_vec(), forged].concat();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let anchor = elsewhere.path().join("anchor.jsonl");
    std::fs::write(&anchor, text).expect("write");
    let report = run(anchored(&fx, &anchor));
    assert_eq!(
        failure_codes(&report),
        vec![Code::AnchorUnparsable, Code::AnchorUntrusted]
    );
    assert_eq!(report.anchors, 2);
}

#[test]
fn a_truncated_tail_is_a_state_rollback_against_the_saved_state() {
    let fx = standard();
    let dir = fx.write();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let state = elsewhere.path().join("state.json");
    let mut options = fx.options();
    options.state = Some(state.clone());
    let report = run(options);
    assert_clean(&report);
    assert!(report.state_written);
    let saved: Value =
        serde_json::from_slice(&std::fs::read(&state).expect("state")).expect("json");
    assert_eq!(saved["origin"], ORIGIN);
    assert_eq!(saved["size"], 19);
    assert_eq!(
        saved["root"],
        record::encode_hash(&merkle::root(&leaves(&dir)))
    );

    truncate(&dir, 17, true);
    let mut options = fx.options();
    options.state = Some(state.clone());
    let report = run(options);
    assert_fails_with(&report, Code::StateRollback);
    assert!(!report.state_written);
    let after: Value =
        serde_json::from_slice(&std::fs::read(&state).expect("state")).expect("json");
    assert_eq!(after, saved, "a failed run leaves the saved state alone");
}

#[test]
fn a_torn_last_line_is_a_warning_and_passes() {
    let fx = standard();
    let dir = fx.write();
    let mut bytes = std::fs::read(segment_path(&dir, 3)).expect("read");
    let half = bytes[..bytes.len() / 4].to_vec();
    bytes.extend_from_slice(&half[..40]);
    std::fs::write(segment_path(&dir, 3), bytes).expect("write");
    let report = run(fx.options());
    assert_warns_with(&report, Code::TailTorn);
    assert_eq!(report.records, 19);
}

#[test]
fn a_torn_checkpoint_line_is_a_warning() {
    let fx = standard();
    let dir = fx.write();
    let mut cps = checkpoint_lines(&dir);
    let torn = cps[0][..30].to_vec();
    cps.push(torn);
    set_checkpoint_lines(&dir, &cps);
    let report = run(fx.options());
    assert_warns_with(&report, Code::TailTorn);
}

#[test]
fn a_stripped_final_newline_of_a_covered_record_fails() {
    let fx = standard();
    let dir = fx.write();
    let mut bytes = std::fs::read(segment_path(&dir, 3)).expect("read");
    bytes.pop();
    std::fs::write(segment_path(&dir, 3), bytes).expect("write");
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointOverClaims);
    assert!(report.has(Code::TailTorn));
}

// ---------------------------------------------------------------------------------------------
// Segments (tamper cases 10 and 11)

#[test]
fn a_deleted_middle_segment_is_missing() {
    let fx = standard();
    let dir = fx.write();
    std::fs::remove_file(segment_path(&dir, 2)).expect("remove");
    let report = run(fx.options());
    assert_fails_with(&report, Code::SegmentMissing);
}

#[test]
fn a_deleted_first_segment_is_missing_and_the_rest_verifies_from_its_frontier() {
    let fx = standard();
    let dir = fx.write();
    std::fs::remove_file(segment_path(&dir, 1)).expect("remove");
    let report = run(fx.options());
    assert_fails_with(&report, Code::SegmentMissing);
    assert_eq!(failure_codes(&report), vec![Code::SegmentMissing]);
    assert_eq!(report.size, 19);
    assert_eq!(report.covered, 19);
}

#[test]
fn swapped_segments_open_in_the_wrong_file() {
    let fx = standard();
    let dir = fx.write();
    let two = std::fs::read(segment_path(&dir, 2)).expect("read");
    let three = std::fs::read(segment_path(&dir, 3)).expect("read");
    std::fs::write(segment_path(&dir, 2), three).expect("write");
    std::fs::write(segment_path(&dir, 3), two).expect("write");
    let report = run(fx.options());
    assert_fails_with(&report, Code::SegmentOpenMissing);
    assert_fails_with(&report, Code::SeqGap);
    assert_fails_with(&report, Code::SeqOutOfOrder);
}

#[test]
fn a_renamed_segment_leaves_a_gap() {
    let fx = standard();
    let dir = fx.write();
    std::fs::rename(segment_path(&dir, 3), segment_path(&dir, 4)).expect("rename");
    let report = run(fx.options());
    assert_fails_with(&report, Code::SegmentMissing);
    assert_fails_with(&report, Code::SegmentOpenMissing);
}

#[test]
fn a_segment_without_its_close_is_unclosed() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 1);
    seg.pop();
    set_lines(&dir, 1, &seg);
    let report = run(fx.options());
    assert_fails_with(&report, Code::SegmentUnclosed);
}

#[test]
fn an_edited_stored_frontier_is_a_frontier_mismatch() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 2);
    let line = seg[0].strip_suffix(b"\n").expect("terminated");
    let mut map: Map<String, Value> = serde_json::from_slice(line).expect("a record");
    let size = map["frontier"]["size"].clone();
    let hashes: Vec<String> = map["frontier"]["hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .map(|_| record::encode_hash(&[7; 32]))
        .collect();
    map.insert("frontier".into(), json!({"size": size, "hashes": hashes}));
    let mut edited = serde_json::to_vec(&Value::Object(map)).expect("json");
    edited.push(b'\n');
    seg[0] = edited;
    set_lines(&dir, 2, &seg);
    rechain(&dir, false, false);
    let report = run(fx.options());
    assert_fails_with(&report, Code::SegmentFrontierMismatch);
}

#[test]
fn a_segment_spliced_from_another_log_is_an_origin_mismatch() {
    let fx = standard();
    let dir = fx.write();
    let other = standard_with_origin(OTHER);
    let other_dir = other.write();
    std::fs::copy(segment_path(&other_dir, 2), segment_path(&dir, 2)).expect("copy");
    let report = run(fx.options());
    assert_fails_with(&report, Code::OriginMismatch);
    assert!(report.has(Code::ChainBroken));
}

#[test]
fn a_head_spliced_from_another_log_is_an_origin_mismatch_against_the_signed_origin() {
    let fx = standard();
    let dir = fx.write();
    let other = standard_with_origin(OTHER);
    let other_dir = other.write();
    std::fs::copy(segment_path(&other_dir, 1), segment_path(&dir, 1)).expect("copy");
    let report = run(fx.options());
    assert_fails_with(&report, Code::OriginMismatch);
    assert_fails_with(&report, Code::GenesisMismatch);
    assert_eq!(report.origin.as_deref(), Some(ORIGIN));
}

#[test]
fn a_checkpoint_spliced_from_another_log_is_an_origin_mismatch() {
    let fx = standard();
    let dir = fx.write();
    let other = standard_with_origin(OTHER);
    let other_dir = other.write();
    let mut cps = checkpoint_lines(&dir);
    cps.push(checkpoint_lines(&other_dir).pop().expect("a checkpoint"));
    set_checkpoint_lines(&dir, &cps);
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointOriginMismatch);
}

// ---------------------------------------------------------------------------------------------
// Keys (tamper cases 12 and 13)

#[test]
fn a_log_resigned_with_an_attackers_key_placed_beside_it_is_untrusted() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 1);
    edit_one_byte(&mut seg[3]);
    set_lines(&dir, 1, &seg);
    rechain(&dir, false, true);
    let attacker = SigningKey::generate(ORIGIN).expect("a key");
    resign(&dir, &attacker);
    let public = format!("{}\n", attacker.verifier());
    for name in ["trust", "trusted.pub", "audit.pub", "key.pub"] {
        std::fs::write(dir.join(name), &public).expect("write");
    }
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointUntrusted);
    assert_eq!(failure_codes(&report), vec![Code::CheckpointUntrusted]);
    assert!(report.keys.is_empty());

    // The forgery is otherwise perfect: only the pinned key stops it.
    let mut options = fx.options();
    options.trusted = vec![attacker.verifier()];
    assert_clean(&run(options));
}

#[test]
fn a_checkpoint_by_a_retired_key_fails() {
    let mut fx = Fixture::new();
    fx.requests(2);
    fx.checkpoint();
    let old = fx.rotate_key();
    fx.requests(2);
    let note = fx.note(&[&old]);
    fx.push_checkpoint(note);
    fx.write();
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointRetiredKey);
    assert_eq!(failure_codes(&report), vec![Code::CheckpointRetiredKey]);
}

#[test]
fn a_rotation_signed_by_the_new_key_only_fails() {
    let mut fx = Fixture::new();
    fx.requests(2);
    fx.checkpoint();
    let new = SigningKey::generate(ORIGIN).expect("a key");
    let fields = json!({"old": fx.key.verifier().to_string(), "new": new.verifier().to_string()});
    fx.record("key.rotated", fields);
    let note = fx.note(&[&new]);
    fx.push_checkpoint(note);
    fx.key = new;
    fx.requests(2);
    fx.stop();
    fx.write();
    let report = run(fx.options());
    assert_fails_with(&report, Code::RotationUnsigned);
    assert_fails_with(&report, Code::CheckpointUntrusted);
}

#[test]
fn a_rotation_signed_by_the_old_key_only_fails() {
    let mut fx = Fixture::new();
    fx.requests(2);
    fx.checkpoint();
    let new = SigningKey::generate(ORIGIN).expect("a key");
    let fields = json!({"old": fx.key.verifier().to_string(), "new": new.verifier().to_string()});
    fx.record("key.rotated", fields);
    fx.checkpoint(); // the old key alone
    fx.key = new;
    fx.requests(2);
    fx.stop();
    fx.write();
    let report = run(fx.options());
    assert_fails_with(&report, Code::RotationUnsigned);
}

#[test]
fn a_rotation_from_an_untrusted_key_fails() {
    // An attacker's rotation record, co-signed by the attacker's "old" key, grants nothing.
    let mut fx = Fixture::new();
    fx.requests(2);
    fx.checkpoint();
    let fake_old = SigningKey::generate(ORIGIN).expect("a key");
    let new = SigningKey::generate(ORIGIN).expect("a key");
    let fields = json!({"old": fake_old.verifier().to_string(), "new": new.verifier().to_string()});
    fx.record("key.rotated", fields);
    let note = fx.note(&[&new, &fake_old]);
    fx.push_checkpoint(note);
    fx.key = new;
    fx.stop();
    fx.write();
    let report = run(fx.options());
    assert_fails_with(&report, Code::RotationUnsigned);
    assert_fails_with(&report, Code::CheckpointUntrusted);
}

// ---------------------------------------------------------------------------------------------
// Rollback and forks (tamper cases 14 and 15)

#[test]
fn an_older_valid_copy_restored_is_a_state_rollback() {
    let mut fx = standard();
    let dir = fx.write();
    let old_copy = tempfile::tempdir().expect("tempdir");
    copy_files(&dir, old_copy.path());
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let state = elsewhere.path().join("state.json");
    let with_state = |fx: &Fixture| {
        let mut options = fx.options();
        options.state = Some(state.clone());
        options
    };
    assert_clean(&run(with_state(&fx)));

    // The log goes on; the saved state moves with it.
    fx.start();
    fx.requests(3);
    fx.stop();
    fx.write();
    let report = run(with_state(&fx));
    assert_clean(&report);
    assert_eq!(
        report.state,
        verify::StateCheck::Checked { size: 19 },
        "{}",
        report.render_text()
    );

    // The older copy is valid on its own, but not after what was seen.
    replace_with_copy(&dir, old_copy.path());
    assert_clean(&run(fx.options()));
    let report = run(with_state(&fx));
    assert_fails_with(&report, Code::StateRollback);
}

#[test]
fn a_rewritten_history_of_the_same_size_is_a_state_rollback() {
    let fx = standard();
    let dir = fx.write();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let state = elsewhere.path().join("state.json");
    let mut options = fx.options();
    options.state = Some(state.clone());
    assert_clean(&run(options));

    // Rewritten and re-signed with the real key: valid alone, another root at the saved size.
    let mut seg = lines(&dir, 2);
    edit_one_byte(&mut seg[2]);
    set_lines(&dir, 2, &seg);
    rechain(&dir, false, true);
    resign(&dir, &fx.key);
    assert_clean(&run(fx.options()));
    let mut options = fx.options();
    options.state = Some(state);
    let report = run(options);
    assert_fails_with(&report, Code::StateRollback);
}

#[test]
fn two_roots_signed_for_one_size_are_a_fork() {
    let fx = standard();
    let dir = fx.write();
    let mut cps = checkpoint_lines(&dir);
    let at = cps
        .iter()
        .position(|l| checkpoint_size(l) == 13)
        .expect("a checkpoint at 13");
    let line = signed_checkpoint_line(&fx, 13, [7; 32]);
    cps.insert(at + 1, line);
    set_checkpoint_lines(&dir, &cps);
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointFork);
    assert!(report.has(Code::CheckpointRootMismatch));
    assert!(!report.has(Code::CheckpointRegressed));
}

// ---------------------------------------------------------------------------------------------
// The checkpoint file (tamper case 16)

#[test]
fn an_edited_checkpoint_note_is_untrusted() {
    let fx = standard();
    let dir = fx.write();
    let mut cps = checkpoint_lines(&dir);
    let mut line: CheckpointLine = serde_json::from_slice(&cps[2]).expect("a line");
    let mut text: Vec<String> = line.note.split('\n').map(str::to_string).collect();
    let root = &mut text[2];
    let replacement = if root.starts_with('A') { "B" } else { "A" };
    root.replace_range(0..1, replacement);
    line.note = text.join("\n");
    let mut bytes = serde_json::to_vec(&line).expect("json");
    bytes.push(b'\n');
    cps[2] = bytes;
    set_checkpoint_lines(&dir, &cps);
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointUntrusted);
}

#[test]
fn a_mangled_checkpoint_line_is_unparsable() {
    let fx = standard();
    let dir = fx.write();
    let mut cps = checkpoint_lines(&dir);
    cps[1] = b"{\"ts\":\"2027-01-01T00:00:00.000000Z\",\"segment\":1}\n".to_vec();
    cps[3] = b"not json\n".to_vec();
    set_checkpoint_lines(&dir, &cps);
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointUnparsable);
    assert_eq!(
        report
            .findings
            .iter()
            .filter(|f| f.code == Code::CheckpointUnparsable)
            .count(),
        2
    );
}

#[test]
fn reordered_checkpoints_regress() {
    let fx = standard();
    let dir = fx.write();
    let mut cps = checkpoint_lines(&dir);
    cps.swap(1, 2);
    set_checkpoint_lines(&dir, &cps);
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointRegressed);
    assert_eq!(failure_codes(&report), vec![Code::CheckpointRegressed]);
}

/// The checkpoint file is read alongside the records, so a checkpoint below a size the records
/// have passed is judged after them: each against the root at its own size.
#[test]
fn checkpoints_moved_back_in_the_file_are_judged_at_their_own_sizes() {
    let fx = standard();
    let dir = fx.write();
    let mut cps = checkpoint_lines(&dir);
    let sizes: Vec<u64> = cps.iter().map(|l| checkpoint_size(l)).collect();
    assert_eq!(sizes, vec![5, 9, 13, 15, 19]);
    // 13, 5, 9, 15, 19: 5 regresses after 13; 9 follows 5 in order, below 13 all the same.
    let thirteen = cps.remove(2);
    cps.insert(0, thirteen);
    set_checkpoint_lines(&dir, &cps);
    let report = run(fx.options());
    assert_eq!(failure_codes(&report), vec![Code::CheckpointRegressed]);
    let regressed: Vec<u64> = report
        .findings
        .iter()
        .filter(|f| f.code == Code::CheckpointRegressed)
        .filter_map(|f| f.line)
        .collect();
    assert_eq!(regressed, vec![2]);
    assert_eq!(report.checkpoints, 5);
    assert_eq!(report.covered, 19);
}

#[test]
fn a_forged_root_below_the_last_checkpoint_mismatches() {
    let fx = standard();
    let dir = fx.write();
    let mut cps = checkpoint_lines(&dir);
    let line = signed_checkpoint_line(&fx, 9, [7; 32]);
    cps.push(line);
    set_checkpoint_lines(&dir, &cps);
    let report = run(fx.options());
    assert_eq!(
        failure_codes(&report),
        vec![Code::CheckpointRootMismatch, Code::CheckpointRegressed]
    );
    let mismatch = report
        .findings
        .iter()
        .find(|f| f.code == Code::CheckpointRootMismatch)
        .expect("a root mismatch");
    assert_eq!(mismatch.line, Some(6));
}

#[test]
fn a_dropped_checkpoint_file_is_no_checkpoint() {
    let fx = standard();
    let dir = fx.write();
    std::fs::remove_file(dir.join(segment::CHECKPOINTS)).expect("remove");
    let report = run(fx.options());
    assert_fails_with(&report, Code::NoCheckpoint);
}

#[test]
fn dropped_last_checkpoints_leave_an_unsigned_tail() {
    let fx = standard();
    let dir = fx.write();
    let mut cps = checkpoint_lines(&dir);
    cps.truncate(3);
    set_checkpoint_lines(&dir, &cps);
    let report = run(fx.options());
    assert_warns_with(&report, Code::TailUnsigned);
    assert_eq!(report.covered, 13);
}

#[test]
fn an_over_claiming_checkpoint_fails() {
    let fx = standard();
    let dir = fx.write();
    let line = signed_checkpoint_line(&fx, 25, [9; 32]);
    let mut cps = checkpoint_lines(&dir);
    cps.push(line);
    set_checkpoint_lines(&dir, &cps);
    let report = run(fx.options());
    assert_fails_with(&report, Code::CheckpointOverClaims);
}

// ---------------------------------------------------------------------------------------------
// Re-serialised lines (tamper case 17): hashes are over the stored bytes

fn reserialised(change: impl Fn(&[u8]) -> Vec<u8>) -> Report {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 1);
    let line = seg[3].strip_suffix(b"\n").expect("terminated").to_vec();
    seg[3] = change(&line);
    set_lines(&dir, 1, &seg);
    run(fx.options())
}

#[test]
fn a_line_re_serialised_with_whitespace_fails() {
    let report = reserialised(|line| {
        let value: Value = serde_json::from_slice(line).expect("json");
        let mut out = serde_json::to_vec_pretty(&value)
            .expect("json")
            .into_iter()
            .filter(|&b| b != b'\n')
            .collect::<Vec<u8>>();
        out.push(b'\n');
        out
    });
    assert_fails_with(&report, Code::LineNotCanonical);
    assert_fails_with(&report, Code::ChainBroken);
}

#[test]
fn a_line_re_serialised_with_another_key_order_fails() {
    let report = reserialised(|line| {
        let mut map: Map<String, Value> = serde_json::from_slice(line).expect("json");
        let route = map.remove("route").expect("route");
        map.insert("route".into(), route);
        let mut out = serde_json::to_vec(&Value::Object(map)).expect("json");
        out.push(b'\n');
        out
    });
    assert_fails_with(&report, Code::ChainBroken);
}

#[test]
fn a_line_with_reordered_head_keys_is_head_invalid() {
    let report = reserialised(|line| {
        let map: Map<String, Value> = serde_json::from_slice(line).expect("json");
        let mut swapped = Map::new();
        swapped.insert("log".into(), map["log"].clone());
        for (k, v) in &map {
            swapped.insert(k.clone(), v.clone());
        }
        let mut out = serde_json::to_vec(&Value::Object(swapped)).expect("json");
        out.push(b'\n');
        out
    });
    assert_fails_with(&report, Code::HeadInvalid);
}

#[test]
fn a_line_with_crlf_fails() {
    let report = reserialised(|line| [line, b"\r\n"].concat());
    assert_fails_with(&report, Code::LineNotCanonical);
    assert_fails_with(&report, Code::ChainBroken);
}

#[test]
fn a_line_with_a_byte_order_mark_fails() {
    let fx = standard();
    let dir = fx.write();
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(std::fs::read(segment_path(&dir, 1)).expect("read"));
    std::fs::write(segment_path(&dir, 1), bytes).expect("write");
    let report = run(fx.options());
    assert_fails_with(&report, Code::LineNotCanonical);
    assert_fails_with(&report, Code::ChainBroken);
}

// ---------------------------------------------------------------------------------------------
// Time, epochs, genesis (tamper case 23 and the head checks)

#[test]
fn a_clock_step_backwards_is_only_a_warning() {
    let mut fx = Fixture::new();
    fx.requests(2);
    fx.ts -= Duration::from_secs(30);
    fx.requests(2);
    fx.stop();
    fx.write();
    let report = run(fx.options());
    assert_warns_with(&report, Code::ClockBackwards);
    assert_eq!(report.codes(), vec![Code::ClockBackwards]);
}

#[test]
fn a_long_silence_within_an_epoch_warns_of_missing_heartbeats() {
    let mut fx = Fixture::new();
    fx.requests(2);
    fx.ts += Duration::from_secs(600);
    fx.requests(2);
    fx.stop();
    fx.write();
    let report = run(fx.options());
    assert_warns_with(&report, Code::HeartbeatGap);
}

#[test]
fn an_epoch_going_back_fails() {
    let mut fx = Fixture::new();
    fx.requests(1);
    fx.start(); // epoch 2
    fx.requests(1);
    fx.epoch = 1;
    fx.requests(1);
    fx.stop();
    fx.write();
    let report = run(fx.options());
    assert_fails_with(&report, Code::EpochRegressed);
    assert_eq!(failure_codes(&report), vec![Code::EpochRegressed]);
}

#[test]
fn a_first_record_not_chained_to_the_genesis_of_its_origin_fails() {
    let mut fx = Fixture::empty(ORIGIN);
    fx.prev = record::genesis(OTHER);
    fx.start();
    fx.requests(2);
    fx.stop();
    fx.write();
    let report = run(fx.options());
    assert_fails_with(&report, Code::GenesisMismatch);
    assert_eq!(failure_codes(&report), vec![Code::GenesisMismatch]);
}

#[test]
fn an_unparsable_line_is_reported_where_it_is() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 2);
    seg[2] = b"{\"v\":1,\"log\":\n".to_vec();
    set_lines(&dir, 2, &seg);
    let report = run(fx.options());
    assert_fails_with(&report, Code::LineUnparsable);
    let finding = report
        .findings
        .iter()
        .find(|f| f.code == Code::LineUnparsable)
        .expect("line-unparsable");
    assert_eq!(finding.file.as_deref(), Some("segment-000002.jsonl"));
    assert_eq!(finding.line, Some(3));
}

// ---------------------------------------------------------------------------------------------
// The report and the API

#[test]
fn the_text_and_json_reports_carry_codes_and_places() {
    let fx = standard();
    let dir = fx.write();
    let mut seg = lines(&dir, 1);
    seg.remove(3);
    set_lines(&dir, 1, &seg);
    let report = run(fx.options());
    let text = report.render_text();
    assert!(text.contains("result:      FAIL"), "{text}");
    assert!(
        text.contains("FAIL seq-gap segment-000001.jsonl:4 @"),
        "{text}"
    );
    let json = report.to_json();
    assert_eq!(json["passed"], false);
    let findings = json["findings"].as_array().expect("findings");
    let gap = findings
        .iter()
        .find(|f| f["code"] == "seq-gap")
        .expect("seq-gap in json");
    assert_eq!(gap["severity"], "failure");
    assert_eq!(gap["file"], "segment-000001.jsonl");
    assert_eq!(gap["line"], 4);
    assert_eq!(gap["seq"], 4);
    assert_ne!(json["summary"]["records"], "ok");
}

#[test]
fn codes_have_distinct_kebab_case_names() {
    let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    for name in &names {
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "{name}"
        );
    }
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before);
}

#[test]
fn progress_reaches_every_byte() {
    let fx = standard();
    fx.write();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut options = fx.options();
    let sink = seen.clone();
    options.progress = Some(Box::new(move |done, total| {
        sink.borrow_mut().push((done, total))
    }));
    let report = run(options);
    let seen = seen.borrow();
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    assert_eq!(seen.last(), Some(&(report.bytes, report.bytes)));
}

#[test]
fn usage_problems_are_errors() {
    let fx = standard();
    let dir = fx.write();
    let missing = Options::new(dir.join("nope"), fx.trusted.clone());
    assert!(matches!(
        verify::verify(missing),
        Err(VerifyError::NotADirectory(_))
    ));
    let untrusting = Options::new(dir.clone(), Vec::new());
    assert!(matches!(
        verify::verify(untrusting),
        Err(VerifyError::NoTrustedKeys)
    ));
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let state = elsewhere.path().join("state.json");
    std::fs::write(&state, "{").expect("write");
    let mut options = fx.options();
    options.state = Some(state);
    assert!(matches!(
        verify::verify(options),
        Err(VerifyError::BadState { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Properties (tamper case 22)

/// A small log covered entirely by its last checkpoint.
fn small() -> Fixture {
    let mut fx = Fixture::new();
    fx.requests(3);
    fx.checkpoint();
    fx.requests(1);
    fx.rotate_segment();
    fx.requests(2);
    fx.stop();
    fx
}

#[test]
fn any_single_byte_change_in_the_covered_region_fails() {
    let fx = small();
    let dir = fx.write();
    let files: Vec<(String, Vec<u8>)> = segment::list(&dir)
        .expect("list")
        .into_iter()
        .map(|(_, p)| {
            let name = p
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("read"))
        })
        .collect();
    let checkpoints = std::fs::read(dir.join(segment::CHECKPOINTS)).expect("read");
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    let options = fx.options();
    let (trusted, now) = (options.trusted.clone(), options.now);
    assert_clean(&run(options));

    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&(0..total, 1u8..=255), |(index, mask)| {
        let work = tempfile::tempdir().expect("tempdir");
        let mut at = index;
        for (name, bytes) in &files {
            let mut bytes = bytes.clone();
            if at < bytes.len() {
                bytes[at] ^= mask;
                at = usize::MAX;
            } else if at != usize::MAX {
                at -= bytes.len();
            }
            std::fs::write(work.path().join(name), bytes).expect("write");
        }
        std::fs::write(work.path().join(segment::CHECKPOINTS), &checkpoints).expect("write");
        let mut options = Options::new(work.path(), trusted.clone());
        options.now = now;
        let report = run(options);
        proptest::prop_assert!(
            !report.passed(),
            "byte {} ^ {:#04x} passed:\n{}",
            index,
            mask,
            report.render_text()
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn any_legitimate_sequence_passes() {
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let ops = proptest::collection::vec(0u8..7, 1..24);
    let result = runner.run(&ops, |ops| {
        let mut fx = Fixture::new();
        for op in &ops {
            match op {
                0 => fx.requests(1),
                1 => fx.checkpoint(),
                2 => fx.heartbeat(),
                3 => fx.rotate_segment(),
                4 => {
                    fx.stop();
                    fx.start();
                }
                5 => {
                    fx.rotate_key();
                }
                _ => fx.requests(3),
            }
        }
        fx.stop();
        fx.write();
        let report = run(fx.options());
        proptest::prop_assert!(
            report.findings.is_empty(),
            "{ops:?}:\n{}",
            report.render_text()
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
