//! The writer: records chain and survive restarts, segments rotate, one process per log,
//! injected write and fsync failures refuse records and leave the log whole, and a crash at
//! any byte of the last batch recovers to a valid prefix that keeps every acknowledged record.
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portcullis_audit::merkle::{self, Frontier};
use portcullis_audit::note::{SignedCheckpoint, SigningKey};
use portcullis_audit::record::{self, Record};
use portcullis_audit::segment::{self, CheckpointLine};
use portcullis_audit::verify;
use portcullis_audit::writer::{AuditError, AuditLog, Options, Wait};
use serde_json::{Map, Value, json};

const ORIGIN: &str = "test.portcullis/audit";

fn key() -> SigningKey {
    SigningKey::generate(ORIGIN).expect("a key")
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn options(dir: &Path, key: SigningKey) -> Options {
    let mut options = Options::new(dir.to_path_buf(), ORIGIN.into(), key);
    options.heartbeat = Duration::from_secs(3600);
    options
}

/// Every record of the log, checked for chain, seq and origin along the way.
fn records(dir: &Path) -> Vec<Record> {
    let mut all: Vec<Record> = Vec::new();
    for (_, path) in segment::list(dir).expect("list") {
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "{} ends with a newline",
            path.display()
        );
        for line in bytes[..bytes.len() - 1].split(|&b| b == b'\n') {
            let r = Record::parse(line).expect("a record");
            let prev = all.last().map_or(record::genesis(ORIGIN), |p| p.leaf);
            assert_eq!(r.seq, all.len() as u64, "seq");
            assert_eq!(r.prev, prev, "chain at seq {}", r.seq);
            assert_eq!(r.log, ORIGIN);
            all.push(r);
        }
    }
    all
}

/// The checkpoints' claims, each checked against the records' Merkle root at its size.
fn check_checkpoints(dir: &Path, records: &[Record], signer: &SigningKey) -> usize {
    let text = std::fs::read_to_string(dir.join(segment::CHECKPOINTS)).expect("checkpoints");
    let trusted = [signer.verifier()];
    let leaves: Vec<_> = records.iter().map(|r| r.leaf).collect();
    let mut n = 0;
    for line in text.lines() {
        let line: CheckpointLine = serde_json::from_str(line).expect("a checkpoint line");
        let note = SignedCheckpoint::parse(&line.note).expect("a signed note");
        assert_eq!(note.signed_by(&trusted).len(), 1, "signed by the log's key");
        let size = note.checkpoint.size as usize;
        assert!(size <= leaves.len(), "a checkpoint never over-claims");
        assert_eq!(note.checkpoint.root, merkle::root(&leaves[..size]));
        n += 1;
    }
    n
}

#[test]
fn records_chain_across_restarts_and_every_checkpoint_matches_its_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = key();
    let pem = dir.path().join("key.pem");
    signer
        .write(&pem, &dir.path().join("key.pub"))
        .expect("write key");
    for start in 1..=3u64 {
        let (log, opened) = AuditLog::open(options(
            &dir.path().join("log"),
            SigningKey::read(&pem, ORIGIN).expect("read"),
        ))
        .expect("open");
        assert_eq!(opened.epoch, start);
        for i in 0..10 {
            let a = log
                .append_blocking("test.event", fields(json!({"i": i})), Wait::Synced)
                .expect("append");
            assert!(a.seq > 0);
        }
        log.close().expect("close");
    }
    let all = records(&dir.path().join("log"));
    assert_eq!(all[0].kind, "segment.open");
    assert_eq!(all.iter().filter(|r| r.kind == "test.event").count(), 30);
    assert_eq!(all.last().map(|r| r.epoch), Some(3));
    assert!(check_checkpoints(&dir.path().join("log"), &all, &signer) >= 3);
    let report = verify::verify(verify::Options::new(
        dir.path().join("log"),
        vec![signer.verifier()],
    ))
    .expect("verify");
    assert!(report.passed(), "{}", report.render_text());
}

#[test]
fn a_second_writer_on_the_same_log_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, _) = AuditLog::open(options(dir.path(), key())).expect("open");
    let second = AuditLog::open(options(dir.path(), key()));
    assert!(matches!(second, Err(AuditError::Locked(_))), "{second:?}");
}

#[test]
fn segments_rotate_by_size_and_each_starts_with_the_frontier_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = key();
    let verifier = signer.verifier();
    let mut opts = options(dir.path(), signer);
    opts.segment_bytes = 2048;
    let (log, _) = AuditLog::open(opts).expect("open");
    for i in 0..60 {
        log.append_blocking(
            "test.event",
            fields(json!({"i": i, "pad": "x".repeat(64)})),
            Wait::Written,
        )
        .expect("append");
    }
    log.close().expect("close");
    let segments = segment::list(dir.path()).expect("list");
    assert!(segments.len() >= 3, "{} segments", segments.len());
    let all = records(dir.path());
    let mut frontier = Frontier::new();
    for r in &all {
        if r.kind == "segment.open" {
            let stored = &r.fields["frontier"];
            assert_eq!(stored["size"], r.seq);
            let hashes: Vec<_> = stored["hashes"]
                .as_array()
                .expect("hashes")
                .iter()
                .map(|h| record::decode_hash(h.as_str().expect("text")).expect("hash"))
                .collect();
            assert_eq!(hashes, frontier.hashes(), "frontier at seq {}", r.seq);
            assert_eq!(r.fields["key"], verifier.to_string());
        }
        frontier.push(r.leaf);
    }
    let closes = all.iter().filter(|r| r.kind == "segment.close").count();
    assert_eq!(
        closes,
        segments.len() - 1,
        "every segment but the live one is closed"
    );
}

#[test]
fn injected_write_and_fsync_failures_refuse_records_and_leave_the_log_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = key();
    let opts = options(dir.path(), signer);
    let faults = opts.faults.clone();
    let (log, _) = AuditLog::open(opts).expect("open");
    log.append_blocking("test.event", fields(json!({"i": 0})), Wait::Synced)
        .expect("append");
    faults.write.store(true, Ordering::SeqCst);
    let refused = log.append_blocking("test.event", fields(json!({"i": 1})), Wait::Written);
    assert!(
        matches!(refused, Err(AuditError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(log.failing());
    faults.write.store(false, Ordering::SeqCst);
    faults.sync.store(true, Ordering::SeqCst);
    let refused = log.append_blocking("test.event", fields(json!({"i": 2})), Wait::Synced);
    assert!(
        matches!(refused, Err(AuditError::Unavailable(_))),
        "{refused:?}"
    );
    faults.sync.store(false, Ordering::SeqCst);
    log.append_blocking("test.event", fields(json!({"i": 3})), Wait::Synced)
        .expect("append after the failure cleared");
    assert!(!log.failing());
    log.close().expect("close");
    let events: Vec<_> = records(dir.path())
        .into_iter()
        .filter(|r| r.kind == "test.event")
        .map(|r| r.fields["i"].as_u64())
        .collect();
    assert_eq!(
        events,
        [Some(0), Some(3)],
        "refused records are not in the log"
    );
}

#[test]
fn a_crash_at_every_byte_of_the_last_batch_recovers_every_acknowledged_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("key.pem");
    let signer = key();
    signer
        .write(&pem, &dir.path().join("key.pub"))
        .expect("write key");
    let log_dir = dir.path().join("log");
    let (log, _) = AuditLog::open(options(
        &log_dir,
        SigningKey::read(&pem, ORIGIN).expect("key"),
    ))
    .expect("open");
    for i in 0..4 {
        log.append_blocking("test.event", fields(json!({"i": i})), Wait::Synced)
            .expect("append");
    }
    log.close().expect("close");
    drop(log);
    // Checkpoints cover synced records only: what the file held before the last batch.
    let checkpoints = std::fs::read(log_dir.join(segment::CHECKPOINTS)).expect("checkpoints");
    let (log, _) = AuditLog::open(options(
        &log_dir,
        SigningKey::read(&pem, ORIGIN).expect("key"),
    ))
    .expect("reopen");
    log.append_blocking("test.event", fields(json!({"i": 4})), Wait::Synced)
        .expect("append");
    log.close().expect("close");
    drop(log);
    let path = log_dir.join(segment::name(1));
    let whole = std::fs::read(&path).expect("read");
    // The last batch is the last event's line: a crash can cut it anywhere. Every event
    // before it was acknowledged (synced) and must survive.
    let ends: Vec<usize> = whole
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    let batch_start = ends[ends.len() - 2];
    for cut in batch_start..=whole.len() {
        let copy = dir.path().join(format!("crash-{cut}"));
        std::fs::create_dir_all(&copy).expect("dir");
        std::fs::write(copy.join(segment::name(1)), &whole[..cut]).expect("write");
        std::fs::write(copy.join(segment::CHECKPOINTS), &checkpoints).expect("write");
        let (log, opened) =
            AuditLog::open(options(&copy, SigningKey::read(&pem, ORIGIN).expect("key")))
                .unwrap_or_else(|e| panic!("reopen after a cut at {cut}: {e}"));
        let torn = !ends.contains(&cut);
        assert_eq!(opened.cuts.len(), usize::from(torn), "cut at {cut}");
        log.close().expect("close");
        let all = records(&copy);
        let kept = all.iter().filter(|r| r.kind == "test.event").count();
        let expected = if cut == whole.len() { 5 } else { 4 };
        assert_eq!(kept, expected, "cut at {cut}: acknowledged records lost");
        if torn {
            assert!(
                all.iter().any(|r| r.kind == "log.recovered"),
                "cut at {cut}"
            );
            let quarantined = std::fs::read_dir(copy.join(segment::QUARANTINE))
                .expect("quarantine")
                .count();
            assert_eq!(quarantined, 1, "cut at {cut}");
        }
        let report =
            verify::verify(verify::Options::new(&copy, vec![signer.verifier()])).expect("verify");
        assert!(report.passed(), "cut at {cut}:\n{}", report.render_text());
        std::fs::remove_dir_all(&copy).expect("clean up");
    }
}

#[test]
fn a_new_key_without_the_retiring_one_is_refused_and_with_it_the_rotation_is_cosigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old_pem = dir.path().join("old.pem");
    let new_pem = dir.path().join("new.pem");
    let old = key();
    let new = key();
    old.write(&old_pem, &dir.path().join("old.pub"))
        .expect("write");
    new.write(&new_pem, &dir.path().join("new.pub"))
        .expect("write");
    let log_dir = dir.path().join("log");
    let read = |p: &Path| SigningKey::read(p, ORIGIN).expect("read");
    let (log, _) = AuditLog::open(options(&log_dir, read(&old_pem))).expect("open");
    log.append_blocking("test.event", Map::new(), Wait::Synced)
        .expect("append");
    log.close().expect("close");
    drop(log);
    let refused = AuditLog::open(options(&log_dir, read(&new_pem)));
    assert!(
        matches!(refused, Err(AuditError::KeyChanged { .. })),
        "{refused:?}"
    );
    let mut opts = options(&log_dir, read(&new_pem));
    opts.retiring_key = Some(read(&old_pem));
    let (log, opened) = AuditLog::open(opts).expect("rotate");
    assert!(opened.rotated);
    log.append_blocking("test.event", Map::new(), Wait::Synced)
        .expect("append");
    log.close().expect("close");
    let all = records(&log_dir);
    let rotated = all
        .iter()
        .find(|r| r.kind == "key.rotated")
        .expect("a key.rotated record");
    assert_eq!(rotated.fields["old"], old.verifier().to_string());
    assert_eq!(rotated.fields["new"], new.verifier().to_string());
    let text = std::fs::read_to_string(log_dir.join(segment::CHECKPOINTS)).expect("checkpoints");
    let trusted = [old.verifier(), new.verifier()];
    let signers: Vec<usize> = text
        .lines()
        .map(|l| serde_json::from_str::<CheckpointLine>(l).expect("line"))
        .map(|l| {
            SignedCheckpoint::parse(&l.note)
                .expect("note")
                .signed_by(&trusted)
                .len()
        })
        .collect();
    assert!(
        signers.contains(&2),
        "one checkpoint signed by both keys: {signers:?}"
    );
    assert_eq!(signers.last(), Some(&1));
}

#[test]
fn a_rotation_cut_short_by_a_crash_is_completed_at_the_next_start_with_both_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = key();
    let new = key();
    let (old_pem, new_pem) = (dir.path().join("old.pem"), dir.path().join("new.pem"));
    old.write(&old_pem, &dir.path().join("old.pub"))
        .expect("write");
    new.write(&new_pem, &dir.path().join("new.pub"))
        .expect("write");
    let read = |p: &Path| SigningKey::read(p, ORIGIN).expect("read");
    let log_dir = dir.path().join("log");
    let (log, _) = AuditLog::open(options(&log_dir, read(&old_pem))).expect("open");
    log.append_blocking("test.event", Map::new(), Wait::Synced)
        .expect("append");
    log.close().expect("close");
    drop(log);
    let checkpoints = log_dir.join(segment::CHECKPOINTS);
    let before = std::fs::read(&checkpoints).expect("checkpoints");
    let mut opts = options(&log_dir, read(&new_pem));
    opts.retiring_key = Some(read(&old_pem));
    let (log, _) = AuditLog::open(opts).expect("rotate");
    log.close().expect("close");
    drop(log);
    // The crash: the co-signed checkpoint never reached the disk.
    std::fs::write(&checkpoints, &before).expect("restore");
    let refused = AuditLog::open(options(&log_dir, read(&new_pem)));
    assert!(
        matches!(refused, Err(AuditError::KeyChanged { .. })),
        "{refused:?}"
    );
    let mut opts = options(&log_dir, read(&new_pem));
    opts.retiring_key = Some(read(&old_pem));
    let (log, opened) = AuditLog::open(opts).expect("completes the rotation");
    assert!(!opened.rotated, "no second key.rotated record");
    log.append_blocking("test.event", Map::new(), Wait::Synced)
        .expect("append");
    log.close().expect("close");
    let trusted = [old.verifier(), new.verifier()];
    let text = std::fs::read_to_string(&checkpoints).expect("checkpoints");
    let signers: Vec<usize> = text
        .lines()
        .map(|l| serde_json::from_str::<CheckpointLine>(l).expect("line"))
        .map(|l| {
            SignedCheckpoint::parse(&l.note)
                .expect("note")
                .signed_by(&trusted)
                .len()
        })
        .collect();
    assert!(signers.contains(&2), "{signers:?}");
    assert_eq!(
        signers.last(),
        Some(&1),
        "the retiring key signs nothing after"
    );
}
