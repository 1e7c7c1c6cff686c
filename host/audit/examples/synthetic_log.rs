//! Writes a valid audit log for the verifier's benchmarks: `RECORDS` request records in one
//! segment, with a signed checkpoint every `EVERY` records, as a quiet log that is checkpointed
//! every second gets them. Built from the format's parts (record lines, leaf hashes, the
//! frontier, signed notes), not by the writer, so that a million checkpoints take seconds and
//! no fsync.
//!
//! `cargo run --release -p portcullis-audit --example synthetic_log -- DIR RECORDS EVERY`
//! writes `DIR/log/` and the trust file `DIR/audit.pub`; then
//! `portcullis audit verify --dir DIR/log --trust DIR/audit.pub`.
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use portcullis_audit::merkle::{self, Frontier};
use portcullis_audit::note::{Checkpoint, SigningKey};
use portcullis_audit::record::{self, Head};
use portcullis_audit::segment::{self, CheckpointLine};
use serde_json::{Map, Value, json};

const ORIGIN: &str = "bench.portcullis/synthetic";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, records, every] = args.as_slice() else {
        return Err("usage: synthetic_log DIR RECORDS EVERY".into());
    };
    let dir = PathBuf::from(dir);
    let records: u64 = records.parse()?;
    let every: u64 = every.parse()?;
    if every == 0 {
        return Err("EVERY must be at least 1".into());
    }
    let log = dir.join("log");
    std::fs::create_dir_all(&log)?;
    let key = SigningKey::generate(ORIGIN)?;
    std::fs::write(dir.join("audit.pub"), format!("{}\n", key.verifier()))?;

    let mut segment = std::io::BufWriter::new(std::fs::File::create(log.join(segment::name(1)))?);
    let mut checkpoints =
        std::io::BufWriter::new(std::fs::File::create(log.join(segment::CHECKPOINTS))?);
    let mut frontier = Frontier::new();
    let mut prev = record::genesis(ORIGIN);
    let mut ts = SystemTime::now() - Duration::from_millis(500 * (records + 3));
    let mut line = Vec::new();
    let fields = |value: Value| match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let open = fields(json!({
        "segment": 1,
        "frontier": {"size": 0, "hashes": []},
        "key": key.verifier().to_string(),
    }));
    for seq in 0..records + 3 {
        let (kind, body) = match seq {
            0 => ("segment.open", open.clone()),
            1 => ("gateway.start", fields(json!({"instance": "gw-1"}))),
            _ if seq == records + 2 => ("gateway.stop", fields(json!({"reason": "signal"}))),
            _ => (
                "request.decision",
                fields(json!({
                    "request_id": format!("req-{seq}"),
                    "route": "bench",
                    "operation": "GET /",
                    "method": "GET",
                    "target": "127.0.0.1:8080/",
                    "source": {"addr": "127.0.0.1:50000", "tls": false},
                    "principal": null,
                    "plugins": [],
                    "decision": "allow",
                })),
            ),
        };
        ts += Duration::from_millis(500);
        line.clear();
        let head = Head {
            log: ORIGIN,
            seq,
            epoch: 1,
            ts,
            prev,
            kind,
        };
        record::write_line(&mut line, &head, &body);
        let leaf = merkle::leaf_hash(&line[..line.len() - 1]);
        frontier.push(leaf);
        prev = leaf;
        segment.write_all(&line)?;
        if frontier.size().is_multiple_of(every) || seq == records + 2 {
            let note = Checkpoint {
                origin: ORIGIN.into(),
                size: frontier.size(),
                root: frontier.root(),
            }
            .sign(&[&key]);
            let cp = CheckpointLine {
                ts: record::format_ts(ts),
                segment: 1,
                note,
            };
            serde_json::to_writer(&mut checkpoints, &cp)?;
            checkpoints.write_all(b"\n")?;
        }
    }
    segment.flush()?;
    checkpoints.flush()?;
    Ok(())
}
