//! `portcullis audit verify`: reads a log directory as raw bytes, streams its segments once and
//! checks records, chain, segments, Merkle roots, signed checkpoints, key rotation, anchors and a
//! saved state, reporting every problem as a [`Finding`] with a stable [`Code`].
//!
//! Trust comes only from [`Options::trusted`] (the pinned trust file) and from keys introduced
//! by a `key.rotated` record whose covering checkpoint a trusted old key co-signed; a key found
//! beside the log is never read.
//!
//! Memory does not grow with the log: the segments are streamed one line at a time, and the
//! checkpoint and anchor files alongside them, each note judged when the records reach its
//! size. Kept are the Merkle frontier, the next notes of each file (at most [`READ_AHEAD`]),
//! the root at the saved state's size, the `key.rotated` records, and the notes out of their
//! file's size order (in the checkpoint file only when it is damaged); an anchor file of plain
//! notes is parsed whole.
//!
//! Checking every checkpoint's Ed25519 signature is most of the work on a log checkpointed every
//! second: the note files are read [`READ_AHEAD`] notes at a time, and their signatures by the
//! pinned keys checked on all of the machine's cores before the notes are judged, in order.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use crate::merkle::{Frontier, Hash, leaf_hash};
use crate::note::{SignedCheckpoint, VerifierKey};
use crate::record::{self, LineError, Record};
use crate::segment::{self, CheckpointLine};

/// The expected heartbeat interval when none is given: the writer's default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);

/// At most this many findings of one code are listed; the rest are counted in
/// [`Report::suppressed`].
pub const MAX_FINDINGS_PER_CODE: u64 = 100;

/// How often (in bytes read) the progress callback is called, besides at the end of each file.
const PROGRESS_STEP: u64 = 1 << 20;

/// How many notes a note file is read ahead of the scan, their signatures checked in parallel.
const READ_AHEAD: usize = 256;

/// How far ahead of the scan, in records, a note file is read: notes every few records (a quiet
/// log, checkpointed every second) are read [`READ_AHEAD`] at a time, notes every thousand
/// records (a busy one) a few at a time. Holding many notes while a busy log's records are
/// scanned costs the allocator more than their signatures cost.
const READ_AHEAD_RECORDS: u64 = 4096;

/// The fewest signatures worth a thread of their own.
const JOBS_PER_THREAD: usize = 8;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What to verify and against what.
pub struct Options {
    /// The log directory.
    pub dir: PathBuf,
    /// The pinned verifier keys (the auditor's trust file). Never taken from the log directory.
    pub trusted: Vec<VerifierKey>,
    /// Checkpoints held elsewhere (a witness, a SIEM, an append-only blob) that the log must
    /// still contain. Either in the `checkpoints.jsonl` format (one `{"ts","segment","note"}`
    /// object per line; chosen when the first non-blank byte is `{`) or plain signed notes, one
    /// after another, separated by blank lines.
    pub anchor: Option<PathBuf>,
    /// The state saved by the last run (`{"origin","size","root"}` JSON): read if it exists, the
    /// log must extend it; rewritten (atomically) after a run with no failure.
    pub state: Option<PathBuf>,
    /// The time to judge staleness against (normally `SystemTime::now()`).
    pub now: SystemTime,
    /// The writer's heartbeat interval: a last record older than twice this, that is not a
    /// `gateway.stop`, is a warning; so is a gap of twice this between records of one epoch.
    pub heartbeat: Duration,
    /// Called with (bytes read, total bytes of the segments) as the segments are read.
    pub progress: Option<Box<dyn FnMut(u64, u64)>>,
}

impl Options {
    /// Options for `dir` against `trusted`: no anchor, no saved state, judged now, with the
    /// default heartbeat interval and no progress callback.
    pub fn new(dir: impl Into<PathBuf>, trusted: Vec<VerifierKey>) -> Self {
        Self {
            dir: dir.into(),
            trusted,
            anchor: None,
            state: None,
            now: SystemTime::now(),
            heartbeat: DEFAULT_HEARTBEAT,
            progress: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("dir", &self.dir)
            .field("trusted", &self.trusted)
            .field("anchor", &self.anchor)
            .field("state", &self.state)
            .field("now", &self.now)
            .field("heartbeat", &self.heartbeat)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Why verification could not run at all (usage or I/O): not a finding about the log.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log directory does not exist or is not a directory.
    #[error("{0}: not a log directory")]
    NotADirectory(String),
    /// No trusted key was given.
    #[error("no trusted verifier keys: give the pinned trust file")]
    NoTrustedKeys,
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The saved state file exists but is not a saved state.
    #[error("{path}: not a saved verifier state: {reason}")]
    BadState {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The log fails verification.
    Failure,
    /// Worth a look; the log still passes (exit 2 under `--strict`).
    Warning,
}

impl Severity {
    /// `failure` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Failure => "failure",
            Severity::Warning => "warning",
        }
    }
}

/// The summary line a finding counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Area {
    /// Records or checkpoints of another log.
    Origin,
    /// Signing keys: trust, retirement, rotation.
    Keys,
    /// Segment files: numbering, open, close, frontier.
    Segments,
    /// Lines and their sequence: parsing, termination, seq, epoch, clock.
    Records,
    /// The `prev` chain.
    Chain,
    /// Merkle roots against checkpoints.
    Merkle,
    /// The checkpoint file.
    Checkpoints,
    /// The anchor file.
    Anchors,
    /// Heartbeats and staleness.
    Heartbeats,
    /// Crash recoveries.
    Recoveries,
    /// Record shape: head, body, canonical bytes.
    Schema,
    /// The saved state of the last run.
    State,
}

impl Area {
    /// Every area, in summary order.
    pub const ALL: [Area; 12] = [
        Area::Origin,
        Area::Keys,
        Area::Segments,
        Area::Records,
        Area::Chain,
        Area::Merkle,
        Area::Checkpoints,
        Area::Anchors,
        Area::Heartbeats,
        Area::Recoveries,
        Area::Schema,
        Area::State,
    ];

    /// The summary line's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Origin => "origin",
            Area::Keys => "keys",
            Area::Segments => "segments",
            Area::Records => "records",
            Area::Chain => "chain",
            Area::Merkle => "merkle",
            Area::Checkpoints => "checkpoints",
            Area::Anchors => "anchors",
            Area::Heartbeats => "heartbeats",
            Area::Recoveries => "recoveries",
            Area::Schema => "schema",
            Area::State => "state",
        }
    }
}

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $name:ident = $text:literal, $severity:ident, $area:ident;)*) => {
        /// A finding's kind. Its [`as_str`](Code::as_str) text is stable: scripts match on it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($(#[doc = $doc])* $name,)*
        }

        impl Code {
            /// Every code.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The stable kebab-case name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $text,)*
                }
            }

            /// Whether it fails verification or only warns.
            pub fn severity(self) -> Severity {
                match self {
                    $(Code::$name => Severity::$severity,)*
                }
            }

            /// The summary line it counts against.
            pub fn area(self) -> Area {
                match self {
                    $(Code::$name => Area::$area,)*
                }
            }
        }
    };
}

codes! {
    /// A terminated line is not JSON (or not UTF-8): the record cannot be read.
    LineUnparsable = "line-unparsable", Failure, Records;
    /// A segment other than the last ends without `\n`: bytes were cut or appended.
    LineNotTerminated = "line-not-terminated", Failure, Records;
    /// The last segment (or the checkpoint file) ends with an unterminated line, or the last
    /// segment is empty: a write torn by a crash, never acknowledged; recovery cuts it.
    TailTorn = "tail-torn", Warning, Records;
    /// The line is not as the writer writes it: a byte-order mark, CR, or whitespace outside
    /// strings (it was re-serialised).
    LineNotCanonical = "line-not-canonical", Failure, Schema;
    /// The head keys are missing, misordered or malformed (`v`, `epoch`, `ts`, `id`, `type`).
    HeadInvalid = "head-invalid", Failure, Schema;
    /// A record the verifier interprets (`key.rotated`) lacks or mangles its own fields.
    BodyInvalid = "body-invalid", Failure, Schema;
    /// A record's `log` is not the log's origin: spliced in from another log.
    OriginMismatch = "origin-mismatch", Failure, Origin;
    /// A `seq` skips ahead: records are missing.
    SeqGap = "seq-gap", Failure, Records;
    /// A `seq` repeats or goes back: records duplicated, swapped or inserted.
    SeqOutOfOrder = "seq-out-of-order", Failure, Records;
    /// A record's `prev` is not the previous line's leaf hash.
    ChainBroken = "chain-broken", Failure, Chain;
    /// Record 0's `prev` is not the genesis hash of the origin.
    GenesisMismatch = "genesis-mismatch", Failure, Chain;
    /// An `epoch` is lower than the one before it.
    EpochRegressed = "epoch-regressed", Failure, Records;
    /// A `ts` is earlier than the one before it (a clock step; not evidence of tampering).
    ClockBackwards = "clock-backwards", Warning, Records;
    /// A segment number is missing (a gap, or segment 1 absent), or segment 1 does not start
    /// at seq 0, or there are no segments at all.
    SegmentMissing = "segment-missing", Failure, Segments;
    /// Two segment files carry the same number (e.g. `segment-000002` and `segment-0000002`).
    SegmentDuplicate = "segment-duplicate", Failure, Segments;
    /// A segment's first record is not `segment.open`, or its `segment` is not the file's
    /// number.
    SegmentOpenMissing = "segment-open-missing", Failure, Segments;
    /// A `segment.open` that is not a segment's first record, or a record after
    /// `segment.close`.
    SegmentMisplaced = "segment-misplaced", Failure, Segments;
    /// A `segment.open`'s stored frontier is missing, malformed or not the frontier computed
    /// from the records before it.
    SegmentFrontierMismatch = "segment-frontier-mismatch", Failure, Segments;
    /// A segment other than the last does not end with `segment.close`, or a close names the
    /// wrong segment or `next`.
    SegmentUnclosed = "segment-unclosed", Failure, Segments;
    /// There are records but no checkpoint at all (the checkpoint file is missing or empty).
    NoCheckpoint = "no-checkpoint", Failure, Checkpoints;
    /// A checkpoint line is not a `{"ts","segment","note"}` object or its note is malformed.
    CheckpointUnparsable = "checkpoint-unparsable", Failure, Checkpoints;
    /// A checkpoint's origin is not the log's: spliced in from another log.
    CheckpointOriginMismatch = "checkpoint-origin-mismatch", Failure, Origin;
    /// A checkpoint has no valid signature by a trusted key (or a key a trusted key rotated to).
    CheckpointUntrusted = "checkpoint-untrusted", Failure, Keys;
    /// A checkpoint is signed only by a key that a `key.rotated` record retired before its size.
    CheckpointRetiredKey = "checkpoint-retired-key", Failure, Keys;
    /// A checkpoint claims more records than the log holds: truncation or a forged claim.
    CheckpointOverClaims = "checkpoint-over-claims", Failure, Merkle;
    /// A checkpoint's root is not the root computed over the records at its size.
    CheckpointRootMismatch = "checkpoint-root-mismatch", Failure, Merkle;
    /// Two validly signed checkpoints of one size with different roots: a fork.
    CheckpointFork = "checkpoint-fork", Failure, Merkle;
    /// A checkpoint's size is smaller than the one on the line before: reordered or spliced.
    CheckpointRegressed = "checkpoint-regressed", Failure, Checkpoints;
    /// A `key.rotated` record whose first covering checkpoint is not signed by both the (trusted)
    /// old key and the new key.
    RotationUnsigned = "rotation-unsigned", Failure, Keys;
    /// Records after the last verified checkpoint: not (yet) covered by a signature.
    TailUnsigned = "tail-unsigned", Warning, Checkpoints;
    /// An anchor note or line does not parse.
    AnchorUnparsable = "anchor-unparsable", Failure, Anchors;
    /// An anchor is not signed by a key trusted for this log.
    AnchorUntrusted = "anchor-untrusted", Failure, Anchors;
    /// An anchor's origin or root differs from the log's at its size.
    AnchorMismatch = "anchor-mismatch", Failure, Anchors;
    /// An anchor covers more records than the log holds: truncation or rollback.
    AnchorAhead = "anchor-ahead", Failure, Anchors;
    /// The log no longer extends the saved state: another origin, fewer records, or another
    /// root at the saved size.
    StateRollback = "state-rollback", Failure, State;
    /// The last record is older than twice the heartbeat interval and is not a `gateway.stop`:
    /// the writer stopped without a trace, or the tail was truncated.
    StaleHeartbeat = "stale-heartbeat", Warning, Heartbeats;
    /// Two consecutive records of one epoch are more than twice the heartbeat interval apart.
    HeartbeatGap = "heartbeat-gap", Warning, Heartbeats;
    /// A `log.recovered` record: recovery cut bytes after a crash (kept in `quarantine/`).
    LogRecovered = "log-recovered", Warning, Recoveries;
}

/// One problem found, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is.
    pub code: Code,
    /// How bad ([`Code::severity`]).
    pub severity: Severity,
    /// The file, relative to the log directory (or the anchor or state path as given).
    pub file: Option<String>,
    /// The line number in that file, from 1.
    pub line: Option<u64>,
    /// The byte offset of that line's start.
    pub offset: Option<u64>,
    /// The record's `seq`, if the line is a record.
    pub seq: Option<u64>,
    /// What is wrong, for a person.
    pub message: String,
}

/// What the saved state check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateCheck {
    /// No state path was given.
    #[default]
    NotGiven,
    /// A path was given but no state saved there yet (a first run).
    NoSavedState,
    /// A saved state of this many records was checked.
    Checked {
        /// Its size.
        size: u64,
    },
}

/// The outcome of a verification: counts, the log's root, and every finding.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The log's origin (from the first trusted checkpoint, else the first record).
    pub origin: Option<String>,
    /// The keys that produced trusted checkpoint signatures, as `<name>+<hex id>`.
    pub keys: Vec<String>,
    /// Segment files read.
    pub segments: u64,
    /// Terminated lines read (each a leaf of the Merkle tree, parsable or not).
    pub records: u64,
    /// Bytes of the segments read.
    pub bytes: u64,
    /// Checkpoint notes parsed.
    pub checkpoints: u64,
    /// Records covered by the largest trusted checkpoint whose root matched.
    pub covered: u64,
    /// Anchor notes parsed.
    pub anchors: u64,
    /// `heartbeat` records.
    pub heartbeats: u64,
    /// `log.recovered` records.
    pub recoveries: u64,
    /// `key.rotated` records.
    pub rotations: u64,
    /// Distinct epochs seen.
    pub epochs: u64,
    /// The Merkle root over every leaf read (`None` for an empty log).
    pub root: Option<Hash>,
    /// The tree size the root is over (records, plus archived ones a first segment's frontier
    /// stands for).
    pub size: u64,
    /// Whether an anchor file was given.
    pub anchored: bool,
    /// What the saved state check did.
    pub state: StateCheck,
    /// Whether the state file was rewritten.
    pub state_written: bool,
    /// The findings listed, in the order found.
    pub findings: Vec<Finding>,
    /// Findings beyond [`MAX_FINDINGS_PER_CODE`] of one code, counted but not listed.
    pub suppressed: BTreeMap<Code, u64>,
}

impl Report {
    /// Whether there is no failure (warnings allowed).
    pub fn passed(&self) -> bool {
        self.failures() == 0
    }

    /// The number of failures, suppressed ones included.
    pub fn failures(&self) -> u64 {
        self.count(|c| c.severity() == Severity::Failure)
    }

    /// The number of warnings, suppressed ones included.
    pub fn warnings(&self) -> u64 {
        self.count(|c| c.severity() == Severity::Warning)
    }

    /// Whether a finding of `code` was made.
    pub fn has(&self, code: Code) -> bool {
        self.count(|c| c == code) > 0
    }

    /// The distinct codes found, in code order.
    pub fn codes(&self) -> Vec<Code> {
        let set: BTreeSet<Code> = self
            .findings
            .iter()
            .map(|f| f.code)
            .chain(self.suppressed.keys().copied())
            .collect();
        set.into_iter().collect()
    }

    fn count(&self, keep: impl Fn(Code) -> bool) -> u64 {
        let listed = self.findings.iter().filter(|f| keep(f.code)).count() as u64;
        let hidden: u64 = self
            .suppressed
            .iter()
            .filter(|(c, _)| keep(**c))
            .map(|(_, n)| n)
            .sum();
        listed + hidden
    }

    /// The process exit code: 0 pass, 1 any failure, 2 warnings only and `strict`.
    pub fn exit_code(&self, strict: bool) -> u8 {
        if !self.passed() {
            1
        } else if strict && self.warnings() > 0 {
            2
        } else {
            0
        }
    }

    fn area_status(&self, area: Area) -> String {
        let failures = self.count(|c| c.area() == area && c.severity() == Severity::Failure);
        let warnings = self.count(|c| c.area() == area && c.severity() == Severity::Warning);
        let plural = |n: u64, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        match (failures, warnings) {
            (0, 0) => "ok".into(),
            (f, 0) => plural(f, "failure"),
            (0, w) => plural(w, "warning"),
            (f, w) => format!("{}, {}", plural(f, "failure"), plural(w, "warning")),
        }
    }

    /// The summary (one line per area: a count and `ok`, or the number of problems), the
    /// result, then one line per finding: severity, code, `file:line @offset`, seq, message.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let status = |area| self.area_status(area);
        let root = self
            .root
            .map_or_else(|| "none".to_string(), |r| record::encode_hash(&r));
        let keys = if self.keys.is_empty() {
            "none".to_string()
        } else {
            self.keys.join(", ")
        };
        let lines: [(&str, String); 12] = [
            (
                "origin",
                format!(
                    "{}: {}",
                    self.origin.as_deref().unwrap_or("(unknown)"),
                    status(Area::Origin)
                ),
            ),
            ("keys", format!("{keys}: {}", status(Area::Keys))),
            (
                "segments",
                format!("{}: {}", self.segments, status(Area::Segments)),
            ),
            (
                "records",
                format!(
                    "{} ({} bytes, {} epochs): {}",
                    self.records,
                    self.bytes,
                    self.epochs,
                    status(Area::Records)
                ),
            ),
            ("chain", status(Area::Chain)),
            (
                "merkle",
                format!(
                    "root {root} at size {}: {}",
                    self.size,
                    status(Area::Merkle)
                ),
            ),
            (
                "checkpoints",
                format!(
                    "{} ({} records covered): {}",
                    self.checkpoints,
                    self.covered,
                    status(Area::Checkpoints)
                ),
            ),
            (
                "anchors",
                if self.anchored {
                    format!("{}: {}", self.anchors, status(Area::Anchors))
                } else {
                    "none given".into()
                },
            ),
            (
                "heartbeats",
                format!("{}: {}", self.heartbeats, status(Area::Heartbeats)),
            ),
            (
                "recoveries",
                format!("{}: {}", self.recoveries, status(Area::Recoveries)),
            ),
            ("schema", status(Area::Schema)),
            (
                "state",
                match self.state {
                    StateCheck::NotGiven => "none given".into(),
                    StateCheck::NoSavedState => format!(
                        "first run{}: {}",
                        if self.state_written { ", saved" } else { "" },
                        status(Area::State)
                    ),
                    StateCheck::Checked { size } => format!(
                        "extends saved size {size}{}: {}",
                        if self.state_written { ", saved" } else { "" },
                        status(Area::State)
                    ),
                },
            ),
        ];
        for (name, value) in lines {
            let _ = writeln!(out, "{:<12} {value}", format!("{name}:"));
        }
        let result = match (self.failures(), self.warnings()) {
            (0, 0) => "PASS".to_string(),
            (0, w) => format!("PASS with {w} warning{}", if w == 1 { "" } else { "s" }),
            (f, w) => format!(
                "FAIL: {f} failure{}, {w} warnings",
                if f == 1 { "" } else { "s" }
            ),
        };
        let _ = writeln!(out, "{:<12} {result}", "result:");
        for finding in &self.findings {
            let tag = match finding.severity {
                Severity::Failure => "FAIL",
                Severity::Warning => "WARN",
            };
            let mut place = finding.file.clone().unwrap_or_default();
            if let Some(line) = finding.line {
                let _ = write!(place, ":{line}");
            }
            if let Some(offset) = finding.offset {
                let _ = write!(place, " @{offset}");
            }
            if let Some(seq) = finding.seq {
                let _ = write!(place, " seq {seq}");
            }
            let _ = writeln!(
                out,
                "{tag} {} {}: {}",
                finding.code.as_str(),
                place.trim(),
                finding.message
            );
        }
        for (code, n) in &self.suppressed {
            let _ = writeln!(out, "… and {n} more {} findings", code.as_str());
        }
        out
    }

    /// The report for machines: the counts, per-area status, and every finding.
    pub fn to_json(&self) -> Value {
        let areas: Map<String, Value> = Area::ALL
            .iter()
            .map(|a| (a.as_str().to_string(), Value::from(self.area_status(*a))))
            .collect();
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "code": f.code.as_str(),
                    "severity": f.severity.as_str(),
                    "file": f.file,
                    "line": f.line,
                    "offset": f.offset,
                    "seq": f.seq,
                    "message": f.message,
                })
            })
            .collect();
        let suppressed: Map<String, Value> = self
            .suppressed
            .iter()
            .map(|(c, n)| (c.as_str().to_string(), Value::from(*n)))
            .collect();
        let state = match self.state {
            StateCheck::NotGiven => Value::Null,
            StateCheck::NoSavedState => json!({"saved_size": null, "written": self.state_written}),
            StateCheck::Checked { size } => {
                json!({"saved_size": size, "written": self.state_written})
            }
        };
        json!({
            "passed": self.passed(),
            "failures": self.failures(),
            "warnings": self.warnings(),
            "origin": self.origin,
            "keys": self.keys,
            "segments": self.segments,
            "records": self.records,
            "bytes": self.bytes,
            "size": self.size,
            "root": self.root.as_ref().map(record::encode_hash),
            "checkpoints": self.checkpoints,
            "covered": self.covered,
            "anchors": if self.anchored { Value::from(self.anchors) } else { Value::Null },
            "heartbeats": self.heartbeats,
            "recoveries": self.recoveries,
            "rotations": self.rotations,
            "epochs": self.epochs,
            "state": state,
            "summary": areas,
            "findings": findings,
            "suppressed": suppressed,
        })
    }
}

/// Where a finding is.
#[derive(Debug, Clone, Default)]
struct Loc {
    file: String,
    line: u64,
    offset: u64,
    seq: Option<u64>,
}

impl Loc {
    fn with_seq(&self, seq: u64) -> Loc {
        Loc {
            seq: Some(seq),
            ..self.clone()
        }
    }
}

#[derive(Debug, Default)]
struct Findings {
    list: Vec<Finding>,
    per_code: HashMap<Code, u64>,
    suppressed: BTreeMap<Code, u64>,
}

impl Findings {
    fn add(&mut self, code: Code, loc: Option<&Loc>, message: impl Into<String>) {
        let n = self.per_code.entry(code).or_insert(0);
        *n += 1;
        if *n > MAX_FINDINGS_PER_CODE {
            *self.suppressed.entry(code).or_insert(0) += 1;
            return;
        }
        self.list.push(Finding {
            code,
            severity: code.severity(),
            file: loc.map(|l| l.file.clone()),
            line: loc.map(|l| l.line),
            offset: loc.map(|l| l.offset),
            seq: loc.and_then(|l| l.seq),
            message: message.into(),
        });
    }

    fn failed(&self) -> bool {
        self.per_code
            .keys()
            .any(|c| c.severity() == Severity::Failure)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> VerifyError + use<> {
    let path = path.display().to_string();
    move |error| VerifyError::Io { path, error }
}

/// Verify the log in `options.dir`. Problems with the log are findings in the report; only
/// usage and I/O problems (no directory, no trusted key, an unreadable file, a corrupt state
/// file) are errors.
pub fn verify(options: Options) -> Result<Report, VerifyError> {
    let Options {
        dir,
        trusted,
        anchor,
        state,
        now,
        heartbeat,
        progress,
    } = options;
    if !dir.is_dir() {
        return Err(VerifyError::NotADirectory(dir.display().to_string()));
    }
    if trusted.is_empty() {
        return Err(VerifyError::NoTrustedKeys);
    }
    let findings = Findings::default();
    let mut report = Report {
        anchored: anchor.is_some(),
        ..Report::default()
    };

    // The checkpoint file and the anchor file are read alongside the segments (`Claims`).
    let checkpoints_path = dir.join(segment::CHECKPOINTS);
    let claims = Claims {
        checkpoints: NoteStream::checkpoints(&checkpoints_path)?.read_ahead(&trusted),
        anchors: anchor
            .as_deref()
            .map(|path| Ok(NoteStream::anchors(path)?.read_ahead(&trusted)))
            .transpose()?,
        trusted,
        trust: None,
    };
    let saved = match &state {
        Some(path) => read_state(path)?,
        None => None,
    };
    report.state = match (&state, &saved) {
        (None, _) => StateCheck::NotGiven,
        (Some(_), None) => StateCheck::NoSavedState,
        (Some(_), Some(s)) => StateCheck::Checked { size: s.size },
    };
    let wanted: BTreeSet<u64> = saved.iter().map(|s| s.size).collect();

    // The origin: the first checkpoint a pinned key signed says it; else the first record.
    let origin = signed_origin(&checkpoints_path, &claims.trusted)?;

    let segments = segment::list(&dir).map_err(io_error(&dir))?;
    let total: u64 = segments
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let mut scan = Scan::new(origin, heartbeat, wanted, findings, progress, total, claims);
    if segments.is_empty() {
        scan.findings.add(
            Code::SegmentMissing,
            None,
            "no segment files in the directory",
        );
    }
    let mut expected = 1u64;
    let mut previous: Option<u64> = None;
    for (index, (number, path)) in segments.iter().enumerate() {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let loc = Loc {
            file: file.clone(),
            ..Loc::default()
        };
        if previous == Some(*number) {
            scan.findings.add(
                Code::SegmentDuplicate,
                Some(&loc),
                format!("a second file for segment {number}"),
            );
        } else if *number != expected {
            let missing = if *number == expected + 1 {
                segment::name(expected)
            } else {
                format!(
                    "{} to {}",
                    segment::name(expected),
                    segment::name(number.saturating_sub(1))
                )
            };
            scan.findings.add(
                Code::SegmentMissing,
                Some(&loc),
                format!("{missing} missing before {file}"),
            );
        }
        previous = Some(*number);
        expected = number + 1;
        scan.segment(*number, path, &file, index + 1 == segments.len())?;
    }
    report.segments = segments.len() as u64;
    scan.finish_progress();
    scan.finish_claims(&segments)?;

    let Scan {
        origin,
        frontier,
        roots,
        records,
        bytes_done,
        rotations,
        heartbeats,
        recoveries,
        epochs,
        last,
        claims,
        mut findings,
        ..
    } = scan;
    let size = frontier.size();
    report.records = records;
    report.bytes = bytes_done;
    report.size = size;
    report.root = (size > 0).then(|| frontier.root());
    report.heartbeats = heartbeats;
    report.recoveries = recoveries;
    report.rotations = rotations.len() as u64;
    report.epochs = epochs;
    report.origin = origin.clone();

    let trust = claims.trust.expect("Claims::finish sets it");
    report.checkpoints = claims.checkpoints.parsed;
    report.anchors = claims.anchors.as_ref().map_or(0, |a| a.parsed);
    report.covered = trust.covered;
    report.keys = trust.keys;

    if report.checkpoints == 0 && records > 0 {
        findings.add(
            Code::NoCheckpoint,
            None,
            format!(
                "{} is missing or empty: no record is signed",
                segment::CHECKPOINTS
            ),
        );
    } else if report.covered < size {
        findings.add(
            Code::TailUnsigned,
            None,
            format!(
                "seq {} to {} ({} records) are not covered by a verified checkpoint",
                report.covered,
                size - 1,
                size - report.covered
            ),
        );
    }

    if let (Some(saved), Some(path)) = (&saved, &state) {
        judge_state(origin.as_deref(), saved, path, &roots, size, &mut findings);
    }

    match &last {
        Some(last) if last.kind == "gateway.stop" => {}
        Some(last) => {
            if let Some(t) = last.time
                && now.duration_since(t).unwrap_or_default() > heartbeat * 2
            {
                findings.add(
                    Code::StaleHeartbeat,
                    Some(&last.loc),
                    format!(
                        "the last record ({}, {}) is {} old, more than twice the heartbeat \
                         interval, and is not a gateway.stop: the writer died or the tail was cut",
                        last.kind,
                        record::format_ts(t),
                        humantime::format_duration(Duration::from_secs(
                            now.duration_since(t).unwrap_or_default().as_secs()
                        ))
                    ),
                );
            }
        }
        None => findings.add(Code::StaleHeartbeat, None, "the log has no records at all"),
    }

    if !findings.failed()
        && let (Some(path), Some(origin)) = (&state, &origin)
        && size > 0
    {
        write_state(path, origin, size, &frontier.root())?;
        report.state_written = true;
    }

    report.findings = findings.list;
    report.suppressed = findings.suppressed;
    Ok(report)
}

/// One parsed checkpoint (from the checkpoint file or the anchor).
#[derive(Debug, Clone)]
struct Noted {
    loc: Loc,
    note: SignedCheckpoint,
    /// Keys whose signature was checked as the note was read ahead, and whether they signed it.
    checked: Vec<(VerifierKey, bool)>,
}

impl Noted {
    fn new(loc: Loc, note: SignedCheckpoint) -> Self {
        Noted {
            loc,
            note,
            checked: Vec::new(),
        }
    }

    /// [`SignedCheckpoint::signed_by`], reusing the checks made when the note was read ahead.
    fn signed_by<'k>(&self, keys: &'k [VerifierKey]) -> Vec<&'k VerifierKey> {
        let mut signers: Vec<&'k VerifierKey> = Vec::new();
        for key in keys {
            if signers.contains(&key) {
                continue;
            }
            let signed = match self.checked.iter().find(|(checked, _)| checked == key) {
                Some(&(_, signed)) => signed,
                None => !self.note.signed_by(std::slice::from_ref(key)).is_empty(),
            };
            if signed {
                signers.push(key);
            }
        }
        signers
    }
}

/// Check the notes' signatures by `keys` (each key a signature line names), spread over the
/// machine's cores, and keep the results in the notes.
fn check_signatures(notes: &mut [&mut Noted], keys: &[VerifierKey]) {
    let jobs: Vec<(usize, usize)> = notes
        .iter()
        .enumerate()
        .flat_map(|(n, noted)| {
            keys.iter()
                .enumerate()
                .filter(|(_, key)| {
                    noted
                        .note
                        .signatures
                        .iter()
                        .any(|line| line.name == key.name && line.id == key.id)
                })
                .map(move |(k, _)| (n, k))
        })
        .collect();
    let signs = |&(n, k): &(usize, usize), notes: &[&mut Noted]| {
        !notes[n]
            .note
            .signed_by(std::slice::from_ref(&keys[k]))
            .is_empty()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(jobs.len().div_ceil(JOBS_PER_THREAD));
    let signed: Vec<bool> = if threads <= 1 {
        jobs.iter().map(|job| signs(job, notes)).collect()
    } else {
        let shared: &[&mut Noted] = notes;
        std::thread::scope(|scope| {
            let parts: Vec<_> = jobs
                .chunks(jobs.len().div_ceil(threads))
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|job| signs(job, shared))
                            .collect::<Vec<bool>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| {
                    part.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    };
    for (&(n, k), signed) in jobs.iter().zip(signed) {
        notes[n].checked.push((keys[k].clone(), signed));
    }
}

/// One entry of a note file.
enum NoteRead {
    Noted(Noted),
    /// Not a checkpoint line, or not a valid note.
    Unparsable(Loc, String),
    /// The checkpoint file's last line, without its `\n`: a write torn by a crash.
    Torn(Loc, u64),
}

/// Which file a [`NoteStream`] reads: the findings differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notes {
    /// The log's `checkpoints.jsonl`.
    Checkpoints,
    /// The auditor's anchor file.
    Anchors,
}

/// Where a [`NoteStream`]'s entries come from.
enum Source {
    /// One `{"ts","segment","note"}` object per line, read one line at a time.
    Lines {
        reader: BufReader<File>,
        path: PathBuf,
        buf: Vec<u8>,
        line: u64,
        offset: u64,
    },
    /// Plain signed notes (an anchor file): parsed whole, as a witness's notes are few.
    Plain(std::vec::IntoIter<NoteRead>),
    /// Read to its end, or no file.
    Done,
}

/// A note file read alongside the segments: a note is judged when the records reach its size,
/// so only the next one is held in memory, however long the file. The checkpoint file is in
/// size order (the writer appends as the log grows), and so is an anchor file that copies it; a
/// note below one before it is put aside (`late`) and judged after the scan, its root found by
/// a second pass over the leaves.
struct NoteStream {
    notes: Notes,
    source: Source,
    /// The next note of this log, in file order, not judged yet.
    next: Option<Noted>,
    /// The size of the last note of this log read: the file's order.
    before: Option<u64>,
    /// Notes below one before them in the file.
    late: Vec<Noted>,
    /// Notes parsed (of any log).
    parsed: u64,
    /// A read error, returned after the scan.
    error: Option<VerifyError>,
    /// The pinned keys whose signatures are checked as notes are read ahead; none: the file is
    /// read one note at a time.
    keys: Vec<VerifierKey>,
    /// Entries read ahead, in file order; a read error ends them.
    ahead: VecDeque<Result<NoteRead, VerifyError>>,
}

impl NoteStream {
    /// The log's checkpoint file; a missing one has no checkpoint.
    fn checkpoints(path: &Path) -> Result<Self, VerifyError> {
        let source = match File::open(path) {
            Ok(handle) => Source::lines(handle, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Source::Done,
            Err(e) => return Err(io_error(path)(e)),
        };
        Ok(Self::new(Notes::Checkpoints, source))
    }

    /// An anchor file: `checkpoints.jsonl` lines, or plain notes separated by blank lines
    /// (chosen by its first byte that is not white space).
    fn anchors(path: &Path) -> Result<Self, VerifyError> {
        let mut handle = File::open(path).map_err(io_error(path))?;
        let mut chunk = [0u8; 4096];
        let first = loop {
            let n = handle.read(&mut chunk).map_err(io_error(path))?;
            if n == 0 {
                break None;
            }
            if let Some(&b) = chunk[..n].iter().find(|b| !b.is_ascii_whitespace()) {
                break Some(b);
            }
        };
        handle.rewind().map_err(io_error(path))?;
        let source = match first {
            None => Source::Done,
            Some(b'{') => Source::lines(handle, path),
            Some(_) => Source::Plain(plain_anchor(path)?.into_iter()),
        };
        Ok(Self::new(Notes::Anchors, source))
    }

    fn new(notes: Notes, source: Source) -> Self {
        NoteStream {
            notes,
            source,
            next: None,
            before: None,
            late: Vec::new(),
            parsed: 0,
            error: None,
            keys: Vec::new(),
            ahead: VecDeque::new(),
        }
    }

    /// Read [`READ_AHEAD`] notes at a time and check their signatures by `keys` in parallel.
    fn read_ahead(mut self, keys: &[VerifierKey]) -> Self {
        self.keys = keys.to_vec();
        self
    }

    /// The next entry; None at the end of the file. Reading ahead stops after the first note
    /// that claims more than `until` records.
    fn read(&mut self, until: u64) -> Result<Option<NoteRead>, VerifyError> {
        let read = if self.keys.is_empty() {
            self.read_one()?
        } else {
            if self.ahead.is_empty() {
                self.fill(until);
            }
            self.ahead.pop_front().transpose()?
        };
        if let Some(NoteRead::Noted(_)) = read {
            self.parsed += 1;
        }
        Ok(read)
    }

    /// Read up to [`READ_AHEAD`] entries (or to the end, an error, or the first note claiming
    /// more than `until` records) and check the signatures of the notes among them.
    fn fill(&mut self, until: u64) {
        while self.ahead.len() < READ_AHEAD {
            match self.read_one() {
                Ok(Some(read)) => {
                    let last = matches!(&read, NoteRead::Noted(noted) if noted.note.checkpoint.size > until);
                    self.ahead.push_back(Ok(read));
                    if last {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.ahead.push_back(Err(e));
                    break;
                }
            }
        }
        let mut notes: Vec<&mut Noted> = self
            .ahead
            .iter_mut()
            .filter_map(|read| match read {
                Ok(NoteRead::Noted(noted)) => Some(noted),
                _ => None,
            })
            .collect();
        check_signatures(&mut notes, &self.keys);
    }

    /// The next entry from the file; None at its end.
    fn read_one(&mut self) -> Result<Option<NoteRead>, VerifyError> {
        let read = match &mut self.source {
            Source::Done => None,
            Source::Plain(notes) => notes.next(),
            Source::Lines {
                reader,
                path,
                buf,
                line,
                offset,
            } => loop {
                buf.clear();
                let n = match reader.read_until(b'\n', buf) {
                    Ok(n) => n as u64,
                    Err(e) => {
                        let e = io_error(path)(e);
                        self.source = Source::Done;
                        return Err(e);
                    }
                };
                if n == 0 {
                    break None;
                }
                *line += 1;
                let loc = Loc {
                    file: match self.notes {
                        Notes::Checkpoints => segment::CHECKPOINTS.to_string(),
                        Notes::Anchors => path.display().to_string(),
                    },
                    line: *line,
                    offset: *offset,
                    seq: None,
                };
                *offset += n;
                let text = match buf.split_last() {
                    Some((b'\n', text)) => text,
                    _ if self.notes == Notes::Checkpoints => break Some(NoteRead::Torn(loc, n)),
                    _ => &buf[..],
                };
                if self.notes == Notes::Anchors && text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let parsed = serde_json::from_slice::<CheckpointLine>(text)
                    .map_err(|e| format!("not a checkpoint line: {e}"))
                    .and_then(|l| SignedCheckpoint::parse(&l.note).map_err(|e| e.to_string()));
                break Some(match parsed {
                    Ok(note) => NoteRead::Noted(Noted::new(loc, note)),
                    Err(e) => NoteRead::Unparsable(loc, e),
                });
            },
        };
        if read.is_none() {
            self.source = Source::Done;
        }
        Ok(read)
    }

    /// The next note of log `origin` in file order, reporting the entries that are not one and
    /// putting aside those below the one before.
    fn read_ours(&mut self, origin: &str, until: u64, findings: &mut Findings) -> Option<Noted> {
        let checkpoints = self.notes == Notes::Checkpoints;
        loop {
            let read = match self.read(until) {
                Ok(Some(read)) => read,
                Ok(None) => return None,
                Err(e) => {
                    self.error.get_or_insert(e);
                    return None;
                }
            };
            let noted = match read {
                NoteRead::Noted(noted) => noted,
                NoteRead::Unparsable(loc, e) => {
                    let code = if checkpoints {
                        Code::CheckpointUnparsable
                    } else {
                        Code::AnchorUnparsable
                    };
                    findings.add(code, Some(&loc), e);
                    continue;
                }
                NoteRead::Torn(loc, n) => {
                    findings.add(
                        Code::TailTorn,
                        Some(&loc),
                        format!(
                            "the last {n} bytes have no \"\\n\": a checkpoint write torn by a crash"
                        ),
                    );
                    continue;
                }
            };
            let claim = &noted.note.checkpoint;
            if claim.origin != origin {
                if checkpoints {
                    findings.add(
                        Code::CheckpointOriginMismatch,
                        Some(&noted.loc),
                        format!(
                            "a checkpoint of log {:?} (size {}), not {origin:?}",
                            claim.origin, claim.size
                        ),
                    );
                } else {
                    findings.add(
                        Code::AnchorMismatch,
                        Some(&noted.loc),
                        format!("an anchor of log {:?}, not {origin:?}", claim.origin),
                    );
                }
                continue;
            }
            let before = self.before.replace(claim.size);
            match before {
                Some(b) if claim.size < b => {
                    if checkpoints {
                        findings.add(
                            Code::CheckpointRegressed,
                            Some(&noted.loc),
                            format!("size {} after size {b} on the line before", claim.size),
                        );
                    }
                    self.late.push(noted);
                }
                _ => return Some(noted),
            }
        }
    }

    /// The next note if it claims `size`, or any size from `size` on when `to_end`. Those
    /// below `size` (they follow one out of order) are put aside.
    fn take(
        &mut self,
        size: u64,
        to_end: bool,
        origin: &str,
        findings: &mut Findings,
    ) -> Option<Noted> {
        loop {
            if self.next.is_none() {
                let until = size.saturating_add(READ_AHEAD_RECORDS);
                self.next = self.read_ours(origin, until, findings);
            }
            let claim = self.next.as_ref()?.note.checkpoint.size;
            if claim < size {
                self.late.extend(self.next.take());
            } else if claim == size || to_end {
                return self.next.take();
            } else {
                return None;
            }
        }
    }
}

impl Source {
    fn lines(handle: File, path: &Path) -> Self {
        Source::Lines {
            reader: BufReader::new(handle),
            path: path.to_path_buf(),
            buf: Vec::new(),
            line: 0,
            offset: 0,
        }
    }
}

/// An anchor file of plain notes, parsed.
fn plain_anchor(path: &Path) -> Result<Vec<NoteRead>, VerifyError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let file = path.display().to_string();
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            let loc = Loc {
                file,
                ..Loc::default()
            };
            return Ok(vec![NoteRead::Unparsable(loc, format!("not UTF-8: {e}"))]);
        }
    };
    Ok(plain_notes(text)
        .into_iter()
        .map(|(line, offset, note)| {
            let loc = Loc {
                file: file.clone(),
                line,
                offset,
                seq: None,
            };
            match SignedCheckpoint::parse(&note) {
                Ok(note) => NoteRead::Noted(Noted::new(loc, note)),
                Err(e) => NoteRead::Unparsable(loc, e.to_string()),
            }
        })
        .collect())
}

/// The origin the first checkpoint signed by a pinned key of its own name says.
fn signed_origin(path: &Path, trusted: &[VerifierKey]) -> Result<Option<String>, VerifyError> {
    let mut stream = NoteStream::checkpoints(path)?;
    while let Some(read) = stream.read(u64::MAX)? {
        if let NoteRead::Noted(cp) = read {
            let origin = &cp.note.checkpoint.origin;
            if cp
                .note
                .signed_by(trusted)
                .iter()
                .any(|key| &key.name == origin)
            {
                return Ok(Some(origin.clone()));
            }
        }
    }
    Ok(None)
}

/// The Merkle roots at `sizes`, from a pass over the segments' leaves (every terminated line)
/// starting at `base` (the scan's; none from the log's first record). No root below `base`.
fn roots_at(
    segments: &[(u64, PathBuf)],
    sizes: &BTreeSet<u64>,
    base: Option<Frontier>,
) -> Result<BTreeMap<u64, Hash>, VerifyError> {
    let mut frontier = base.unwrap_or_default();
    let mut roots = BTreeMap::new();
    if sizes.contains(&frontier.size()) {
        roots.insert(frontier.size(), frontier.root());
    }
    let mut buf = Vec::new();
    for (_, path) in segments {
        let handle = File::open(path).map_err(io_error(path))?;
        let mut reader = BufReader::with_capacity(1 << 16, handle);
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(io_error(path))? == 0 {
                break;
            }
            if let Some((b'\n', line)) = buf.split_last() {
                frontier.push(leaf_hash(line));
                if sizes.contains(&frontier.size()) {
                    roots.insert(frontier.size(), frontier.root());
                }
            }
        }
    }
    Ok(roots)
}

/// Plain signed notes one after another: text lines, a blank line, signature lines (`— …`);
/// a blank line or a line that is not a signature ends a note. Returns (line, offset, note).
fn plain_notes(text: &str) -> Vec<(u64, u64, String)> {
    let mut notes = Vec::new();
    let mut body: Vec<&str> = Vec::new();
    let mut sigs: Vec<&str> = Vec::new();
    let mut start = (0u64, 0u64);
    let mut in_sigs = false;
    let finish = |body: &mut Vec<&str>, sigs: &mut Vec<&str>, start, notes: &mut Vec<_>| {
        let mut note = body.join("\n");
        note.push_str("\n\n");
        for sig in sigs.iter() {
            note.push_str(sig);
            note.push('\n');
        }
        let (line, offset) = start;
        notes.push((line, offset, note));
        body.clear();
        sigs.clear();
    };
    let mut offset = 0u64;
    for (index, line) in text.split('\n').enumerate() {
        let here = (index as u64 + 1, offset);
        offset += line.len() as u64 + 1;
        if !in_sigs {
            if line.is_empty() {
                if !body.is_empty() {
                    in_sigs = true;
                }
            } else {
                if body.is_empty() {
                    start = here;
                }
                body.push(line);
            }
        } else if line.starts_with("\u{2014} ") {
            sigs.push(line);
        } else {
            finish(&mut body, &mut sigs, start, &mut notes);
            in_sigs = false;
            if !line.is_empty() {
                start = here;
                body.push(line);
            }
        }
    }
    if !body.is_empty() {
        finish(&mut body, &mut sigs, start, &mut notes);
    }
    notes
}

/// The state a run saves: the log extends it next time.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SavedState {
    origin: String,
    size: u64,
    root: String,
}

fn read_state(path: &Path) -> Result<Option<SavedState>, VerifyError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    let bad = |reason: String| VerifyError::BadState {
        path: path.display().to_string(),
        reason,
    };
    let state: SavedState = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if record::decode_hash(&state.root).is_none() {
        return Err(bad("`root` is not a base64 SHA-256".into()));
    }
    Ok(Some(state))
}

fn write_state(path: &Path, origin: &str, size: u64, root: &Hash) -> Result<(), VerifyError> {
    let state = SavedState {
        origin: origin.to_string(),
        size,
        root: record::encode_hash(root),
    };
    let mut text = serde_json::to_vec(&state).map_err(|e| VerifyError::BadState {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    text.push(b'\n');
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, &text).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// The last record read: for staleness, epochs and the clock.
#[derive(Debug, Clone)]
struct Last {
    loc: Loc,
    kind: String,
    epoch: u64,
    time: Option<SystemTime>,
}

/// A `key.rotated` record.
#[derive(Debug, Clone)]
struct Rotation {
    loc: Loc,
    seq: u64,
    old: VerifierKey,
    new: VerifierKey,
}

/// Per-segment state while it is read.
#[derive(Debug)]
struct SegmentState {
    number: u64,
    lines: u64,
    last_was_close: bool,
}

/// The streaming pass over the segments.
struct Scan {
    origin: Option<String>,
    heartbeat: Duration,
    /// The sizes the anchors and the saved state claim, and the roots at them.
    wanted: BTreeSet<u64>,
    roots: BTreeMap<u64, Hash>,
    /// The checkpoints and anchors, judged as the records reach their sizes.
    claims: Claims,
    /// The frontier the scan started from, when the first segment here is not the log's first
    /// (the older ones archived): no root before it can be checked.
    base: Option<Frontier>,
    frontier: Frontier,
    /// The previous line's leaf (None before the first line).
    prev_leaf: Option<Hash>,
    expected_seq: Option<u64>,
    last: Option<Last>,
    records: u64,
    epochs: u64,
    heartbeats: u64,
    recoveries: u64,
    rotations: Vec<Rotation>,
    findings: Findings,
    progress: Option<Box<dyn FnMut(u64, u64)>>,
    bytes_done: u64,
    bytes_reported: u64,
    bytes_total: u64,
}

impl Scan {
    fn new(
        origin: Option<String>,
        heartbeat: Duration,
        wanted: BTreeSet<u64>,
        findings: Findings,
        progress: Option<Box<dyn FnMut(u64, u64)>>,
        bytes_total: u64,
        claims: Claims,
    ) -> Self {
        let mut roots = BTreeMap::new();
        let frontier = Frontier::new();
        if wanted.contains(&0) {
            roots.insert(0, frontier.root());
        }
        Scan {
            origin,
            heartbeat,
            wanted,
            roots,
            claims,
            base: None,
            frontier,
            prev_leaf: None,
            expected_seq: None,
            last: None,
            records: 0,
            epochs: 0,
            heartbeats: 0,
            recoveries: 0,
            rotations: Vec::new(),
            findings,
            progress,
            bytes_done: 0,
            bytes_reported: 0,
            bytes_total,
        }
    }

    fn report_progress(&mut self) {
        if let Some(progress) = self.progress.as_mut() {
            progress(self.bytes_done, self.bytes_total.max(self.bytes_done));
        }
        self.bytes_reported = self.bytes_done;
    }

    fn finish_progress(&mut self) {
        if self.bytes_reported != self.bytes_done || self.bytes_done == 0 {
            self.report_progress();
        }
    }

    /// Stream one segment file.
    fn segment(
        &mut self,
        number: u64,
        path: &Path,
        file: &str,
        is_last: bool,
    ) -> Result<(), VerifyError> {
        let handle = File::open(path).map_err(io_error(path))?;
        let mut reader = BufReader::with_capacity(1 << 16, handle);
        let mut buf = Vec::new();
        let mut seg = SegmentState {
            number,
            lines: 0,
            last_was_close: false,
        };
        let mut offset = 0u64;
        let mut last_loc = Loc {
            file: file.to_string(),
            ..Loc::default()
        };
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io_error(path))? as u64;
            if n == 0 {
                break;
            }
            seg.lines += 1;
            let loc = Loc {
                file: file.to_string(),
                line: seg.lines,
                offset,
                seq: None,
            };
            if let Some((b'\n', line)) = buf.split_last() {
                self.line(line, &loc, &mut seg);
            } else if is_last {
                self.findings.add(
                    Code::TailTorn,
                    Some(&loc),
                    format!(
                        "the last {n} bytes have no \"\\n\": a write torn by a crash, never \
                         acknowledged; recovery cuts it at the next start"
                    ),
                );
            } else {
                self.findings.add(
                    Code::LineNotTerminated,
                    Some(&loc),
                    format!("the last {n} bytes of a segment that is not the last have no \"\\n\""),
                );
                seg.last_was_close = false;
            }
            last_loc = loc;
            offset += n;
            self.bytes_done += n;
            if self.bytes_done - self.bytes_reported >= PROGRESS_STEP {
                self.report_progress();
            }
        }
        if seg.lines == 0 {
            let loc = Loc {
                file: file.to_string(),
                ..Loc::default()
            };
            if is_last {
                self.findings.add(
                    Code::TailTorn,
                    Some(&loc),
                    "the last segment is empty: created, then a crash before its segment.open",
                );
            } else {
                self.findings
                    .add(Code::SegmentOpenMissing, Some(&loc), "the segment is empty");
            }
        } else if !is_last && !seg.last_was_close {
            self.findings.add(
                Code::SegmentUnclosed,
                Some(&last_loc),
                format!("segment {number} is not the last but does not end with segment.close"),
            );
        }
        self.report_progress();
        Ok(())
    }

    fn push(&mut self, leaf: Hash) {
        if self.frontier.size() == 0 {
            self.reach();
        }
        self.frontier.push(leaf);
        self.prev_leaf = Some(leaf);
        let size = self.frontier.size();
        if self.wanted.contains(&size) {
            self.roots.insert(size, self.frontier.root());
        }
        self.reach();
    }

    /// Judge the checkpoints and anchors that claim the size the records have reached. Until
    /// a record says the origin, none is read: those passed meanwhile are judged after the scan.
    fn reach(&mut self) {
        if let Some(origin) = self.origin.as_deref() {
            let at = (self.frontier.size(), &self.frontier);
            self.claims
                .reach(origin, at, &self.rotations, &mut self.findings);
        }
    }

    /// After the last record: the claims beyond it, and those put aside.
    fn finish_claims(&mut self, segments: &[(u64, PathBuf)]) -> Result<(), VerifyError> {
        if self.frontier.size() == 0 {
            self.reach();
        }
        self.claims.finish(
            self.origin.as_deref().unwrap_or_default(),
            self.frontier.size(),
            (segments, self.base.clone()),
            &self.rotations,
            &mut self.findings,
        )
    }

    /// One terminated line (without its `\n`): always a leaf, whatever it holds.
    fn line(&mut self, raw: &[u8], loc: &Loc, seg: &mut SegmentState) {
        self.records += 1;
        let leaf = leaf_hash(raw);
        let mut body = raw;
        if let Some(rest) = raw.strip_prefix(BOM) {
            self.findings.add(
                Code::LineNotCanonical,
                Some(loc),
                "the line starts with a byte-order mark",
            );
            body = rest;
        } else if let Some(why) = non_canonical(raw) {
            self.findings.add(Code::LineNotCanonical, Some(loc), why);
        }
        match Record::parse(body) {
            Ok(rec) => self.record(&rec, leaf, loc, seg),
            Err(e) => {
                let code = match e {
                    LineError::Json(_) => Code::LineUnparsable,
                    LineError::Head(_) => Code::HeadInvalid,
                };
                self.findings.add(code, Some(loc), e.to_string());
                self.expected_seq = self.expected_seq.map(|s| s + 1);
                seg.last_was_close = false;
                self.push(leaf);
            }
        }
    }

    fn record(&mut self, rec: &Record, leaf: Hash, loc: &Loc, seg: &mut SegmentState) {
        let loc = loc.with_seq(rec.seq);
        let loc = &loc;
        self.head(rec, loc);
        let origin = self.origin.get_or_insert_with(|| rec.log.clone()).clone();
        if rec.log != origin {
            self.findings.add(
                Code::OriginMismatch,
                Some(loc),
                format!("the record is from log {:?}, not {origin:?}", rec.log),
            );
        }

        match self.expected_seq {
            Some(e) if rec.seq > e => self.findings.add(
                Code::SeqGap,
                Some(loc),
                format!(
                    "seq {} follows {}: {} record(s) missing",
                    rec.seq,
                    e.wrapping_sub(1),
                    rec.seq - e
                ),
            ),
            Some(e) if rec.seq < e => self.findings.add(
                Code::SeqOutOfOrder,
                Some(loc),
                format!(
                    "seq {} follows {}: repeated or out of order",
                    rec.seq,
                    e.wrapping_sub(1)
                ),
            ),
            Some(_) => {}
            None if self.prev_leaf.is_none() && rec.seq != 0 && seg.number == 1 => {
                self.findings.add(
                    Code::SegmentMissing,
                    Some(loc),
                    format!(
                        "segment 1 starts at seq {}, not 0: the records before it are missing",
                        rec.seq
                    ),
                );
            }
            None => {}
        }
        self.expected_seq = Some(rec.seq + 1);

        if seg.last_was_close {
            self.findings.add(
                Code::SegmentMisplaced,
                Some(loc),
                "a record after the segment's segment.close",
            );
        }
        if loc.line == 1 {
            self.open(rec, loc, seg.number);
        } else if rec.kind == "segment.open" {
            self.findings.add(
                Code::SegmentMisplaced,
                Some(loc),
                "segment.open is not the first record of its segment",
            );
        }

        match self.prev_leaf {
            Some(prev) if rec.prev != prev => self.findings.add(
                Code::ChainBroken,
                Some(loc),
                format!(
                    "prev {} is not the previous line's leaf {}",
                    record::encode_hash(&rec.prev),
                    record::encode_hash(&prev)
                ),
            ),
            Some(_) => {}
            None if rec.seq == 0 && rec.prev != record::genesis(&origin) => self.findings.add(
                Code::GenesisMismatch,
                Some(loc),
                format!(
                    "prev of record 0 is not the genesis hash of origin {origin:?}: {}",
                    record::encode_hash(&rec.prev)
                ),
            ),
            // An archived head: what came before is not here to check against.
            None => {}
        }

        match rec.kind.as_str() {
            "segment.close" => {
                let segment = rec.fields.get("segment").and_then(Value::as_u64);
                let next = rec.fields.get("next").and_then(Value::as_u64);
                if segment != Some(seg.number) || next != Some(seg.number + 1) {
                    self.findings.add(
                        Code::SegmentUnclosed,
                        Some(loc),
                        format!(
                            "segment.close says segment {segment:?} next {next:?} in segment {}",
                            seg.number
                        ),
                    );
                }
            }
            "key.rotated" => {
                let key = |name: &str| {
                    rec.fields
                        .get(name)
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("`{name}` is not a string"))
                        .and_then(|t| VerifierKey::parse(t).map_err(|e| format!("`{name}`: {e}")))
                };
                match (key("old"), key("new")) {
                    (Ok(old), Ok(new)) => self.rotations.push(Rotation {
                        loc: loc.clone(),
                        seq: rec.seq,
                        old,
                        new,
                    }),
                    (Err(e), _) | (_, Err(e)) => {
                        self.findings.add(Code::BodyInvalid, Some(loc), e);
                    }
                }
            }
            "heartbeat" => self.heartbeats += 1,
            "log.recovered" => {
                self.recoveries += 1;
                let mut cut = rec.fields.clone();
                for key in record::HEAD_KEYS {
                    cut.remove(key);
                }
                self.findings.add(
                    Code::LogRecovered,
                    Some(loc),
                    format!(
                        "recovery cut a damaged tail after a crash: {}",
                        Value::Object(cut)
                    ),
                );
            }
            _ => {}
        }
        seg.last_was_close = rec.kind == "segment.close";

        let time = rec.time();
        match &self.last {
            None => self.epochs = 1,
            Some(last) => {
                if rec.epoch < last.epoch {
                    self.findings.add(
                        Code::EpochRegressed,
                        Some(loc),
                        format!("epoch {} follows epoch {}", rec.epoch, last.epoch),
                    );
                } else if rec.epoch > last.epoch {
                    self.epochs += 1;
                }
                if let (Some(t), Some(lt)) = (time, last.time) {
                    match t.duration_since(lt) {
                        Err(back) => self.findings.add(
                            Code::ClockBackwards,
                            Some(loc),
                            format!(
                                "ts {} is {} before the previous record's",
                                rec.ts,
                                humantime::format_duration(back.duration())
                            ),
                        ),
                        Ok(gap) if rec.epoch == last.epoch && gap > self.heartbeat * 2 => {
                            self.findings.add(
                                Code::HeartbeatGap,
                                Some(loc),
                                format!(
                                    "{} without a record in epoch {}: heartbeats missing",
                                    humantime::format_duration(Duration::from_secs(gap.as_secs())),
                                    rec.epoch
                                ),
                            );
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
        self.last = Some(Last {
            loc: loc.clone(),
            kind: rec.kind.clone(),
            epoch: rec.epoch,
            time,
        });
        self.push(leaf);
    }

    /// The head's values (the order and types `Record::parse` already checked).
    fn head(&mut self, rec: &Record, loc: &Loc) {
        let mut problems = Vec::new();
        if rec.v != record::VERSION {
            problems.push(format!("v is {}, not {}", rec.v, record::VERSION));
        }
        if rec.epoch == 0 {
            problems.push("epoch is 0; epochs start at 1".to_string());
        }
        match rec.time() {
            None => problems.push(format!("ts {:?} is not RFC 3339", rec.ts)),
            Some(t) if record::format_ts(t) != rec.ts => problems.push(format!(
                "ts {:?} is not UTC with microseconds ({})",
                rec.ts,
                record::format_ts(t)
            )),
            Some(_) => {}
        }
        let uuid_ok =
            uuid::Uuid::try_parse(&rec.id).is_ok_and(|u| u.hyphenated().to_string() == rec.id);
        if !uuid_ok {
            problems.push(format!(
                "id {:?} is not a lowercase hyphenated UUID",
                rec.id
            ));
        }
        if rec.kind.is_empty() {
            problems.push("type is empty".to_string());
        }
        if !problems.is_empty() {
            self.findings
                .add(Code::HeadInvalid, Some(loc), problems.join("; "));
        }
    }

    /// A segment's first record: `segment.open` with its number and the frontier before it.
    fn open(&mut self, rec: &Record, loc: &Loc, number: u64) {
        if rec.kind != "segment.open" {
            self.findings.add(
                Code::SegmentOpenMissing,
                Some(loc),
                format!("the first record is {}, not segment.open", rec.kind),
            );
            return;
        }
        match rec.fields.get("segment").and_then(Value::as_u64) {
            Some(n) if n == number => {}
            Some(n) => self.findings.add(
                Code::SegmentOpenMissing,
                Some(loc),
                format!("segment.open of segment {n} in the file of segment {number}"),
            ),
            None => self.findings.add(
                Code::SegmentOpenMissing,
                Some(loc),
                "segment.open without a `segment` number",
            ),
        }
        let Some(stored) = parse_frontier(rec.fields.get("frontier")) else {
            self.findings.add(
                Code::SegmentFrontierMismatch,
                Some(loc),
                "segment.open without a valid `frontier` ({\"size\", \"hashes\"})",
            );
            return;
        };
        if stored.size() != rec.seq {
            self.findings.add(
                Code::SegmentFrontierMismatch,
                Some(loc),
                format!(
                    "the frontier covers {} leaves but the record's seq is {}",
                    stored.size(),
                    rec.seq
                ),
            );
        }
        if self.prev_leaf.is_none() && stored.size() > 0 {
            // The older segments are archived (or missing: reported by number or seq). This
            // segment verifies on its own from its stored frontier.
            self.frontier = stored.clone();
            self.base = Some(stored);
            let size = self.frontier.size();
            if self.wanted.contains(&size) {
                self.roots.insert(size, self.frontier.root());
            }
            self.reach();
        } else if stored != self.frontier {
            self.findings.add(
                Code::SegmentFrontierMismatch,
                Some(loc),
                format!(
                    "the stored frontier ({} leaves) is not the one computed from the {} leaves \
                     before it",
                    stored.size(),
                    self.frontier.size()
                ),
            );
        }
    }
}

/// `{"size": n, "hashes": [base64, …]}`.
fn parse_frontier(value: Option<&Value>) -> Option<Frontier> {
    let object = value?.as_object()?;
    let size = object.get("size")?.as_u64()?;
    let hashes = object
        .get("hashes")?
        .as_array()?
        .iter()
        .map(|h| h.as_str().and_then(record::decode_hash))
        .collect::<Option<Vec<Hash>>>()?;
    Frontier::from_parts(size, hashes)
}

/// Why a parsable line is not byte for byte what the writer writes, if it is not.
fn non_canonical(line: &[u8]) -> Option<&'static str> {
    if line.last() == Some(&b'\r') {
        return Some("the line ends with CR (CRLF line ending)");
    }
    let mut in_string = false;
    let mut escaped = false;
    for &b in line {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\r') {
            return Some("whitespace outside strings: the line was re-serialised");
        }
    }
    None
}

/// The signed claims about the log, judged as the records reach their sizes: the checkpoint
/// file's (trust, rotation, forks, coverage) and the anchor file's.
struct Claims {
    checkpoints: NoteStream,
    anchors: Option<NoteStream>,
    /// The pinned keys.
    trusted: Vec<VerifierKey>,
    /// Set at the first size judged (the origin is known by then).
    trust: Option<Trust>,
}

impl Claims {
    /// Judge the notes that claim `size`, whose root `frontier` has.
    fn reach(
        &mut self,
        origin: &str,
        (size, frontier): (u64, &Frontier),
        rotations: &[Rotation],
        findings: &mut Findings,
    ) {
        let trust = self
            .trust
            .get_or_insert_with(|| Trust::new(origin, &self.trusted));
        let mut root = None;
        while let Some(cp) = self.checkpoints.take(size, false, origin, findings) {
            let root = root.get_or_insert_with(|| frontier.root());
            trust.judge(&cp, Some(root), size, rotations, findings);
        }
        if let Some(anchors) = self.anchors.as_mut() {
            while let Some(anchor) = anchors.take(size, false, origin, findings) {
                let root = root.get_or_insert_with(|| frontier.root());
                judge_anchor(&anchor, Some(root), size, &trust.ever_trusted, findings);
            }
        }
    }

    /// After the last record (`size` of them): the notes that claim more, then those put
    /// aside, with their roots from a second pass over the leaves of `segments` from `base`.
    fn finish(
        &mut self,
        origin: &str,
        size: u64,
        (segments, base): (&[(u64, PathBuf)], Option<Frontier>),
        rotations: &[Rotation],
        findings: &mut Findings,
    ) -> Result<(), VerifyError> {
        let trust = self
            .trust
            .get_or_insert_with(|| Trust::new(origin, &self.trusted));
        while let Some(cp) = self.checkpoints.take(size + 1, true, origin, findings) {
            trust.judge(&cp, None, size, rotations, findings);
        }
        let mut late_anchors = Vec::new();
        if let Some(anchors) = self.anchors.as_mut() {
            while let Some(anchor) = anchors.take(size + 1, true, origin, findings) {
                judge_anchor(&anchor, None, size, &trust.ever_trusted, findings);
            }
            if let Some(e) = anchors.error.take() {
                return Err(e);
            }
            late_anchors = std::mem::take(&mut anchors.late);
        }
        if let Some(e) = self.checkpoints.error.take() {
            return Err(e);
        }
        let late_checkpoints = std::mem::take(&mut self.checkpoints.late);
        if late_checkpoints.is_empty() && late_anchors.is_empty() {
            return Ok(());
        }
        let sizes: BTreeSet<u64> = late_checkpoints
            .iter()
            .chain(&late_anchors)
            .map(|noted| noted.note.checkpoint.size)
            .filter(|&s| s <= size)
            .collect();
        let roots = roots_at(segments, &sizes, base)?;
        for cp in &late_checkpoints {
            let root = roots.get(&cp.note.checkpoint.size);
            trust.judge(cp, root, size, rotations, findings);
        }
        for anchor in &late_anchors {
            let root = roots.get(&anchor.note.checkpoint.size);
            judge_anchor(anchor, root, size, &trust.ever_trusted, findings);
        }
        Ok(())
    }
}

/// What the checkpoints judged so far established: the keys in force, how far the log is
/// covered, and the root last signed at a size (for forks). Checkpoints are judged in size
/// order, so a `key.rotated` record takes effect at the first checkpoint that covers it.
struct Trust {
    origin: String,
    /// The pinned keys of this log, then every key a co-signed rotation introduced.
    ever_trusted: Vec<VerifierKey>,
    active: Vec<VerifierKey>,
    retired: Vec<VerifierKey>,
    /// The pinned keys and every key a `key.rotated` record read so far names.
    every_key: Vec<VerifierKey>,
    /// The rotations read so far whose keys are in `every_key`, and those applied.
    rotations_known: usize,
    rotations_applied: usize,
    /// The first validly signed checkpoint at the size judged last: (size, root, line).
    signed: Option<(u64, Hash, u64)>,
    covered: u64,
    keys: Vec<String>,
}

fn key_label(key: &VerifierKey) -> String {
    format!("{}+{}", key.name, hex::encode(key.id))
}

impl Trust {
    fn new(origin: &str, trusted: &[VerifierKey]) -> Self {
        let ours: Vec<VerifierKey> = trusted
            .iter()
            .filter(|k| k.name == origin)
            .cloned()
            .collect();
        Trust {
            origin: origin.to_string(),
            ever_trusted: ours.clone(),
            active: ours.clone(),
            retired: Vec::new(),
            every_key: ours,
            rotations_known: 0,
            rotations_applied: 0,
            signed: None,
            covered: 0,
            keys: Vec::new(),
        }
    }

    /// Judge one checkpoint of this log, of `size` records so far: `root` is the records' root
    /// at its size, None when it claims more or the segments before it are archived.
    fn judge(
        &mut self,
        cp: &Noted,
        root: Option<&Hash>,
        size: u64,
        rotations: &[Rotation],
        findings: &mut Findings,
    ) {
        let claim = &cp.note.checkpoint;
        for r in &rotations[self.rotations_known..] {
            for k in [&r.old, &r.new] {
                if k.name == self.origin && !self.every_key.contains(k) {
                    self.every_key.push(k.clone());
                }
            }
        }
        self.rotations_known = rotations.len();
        // Each known key's signature is checked once per checkpoint.
        let valid: Vec<VerifierKey> = cp.signed_by(&self.every_key).into_iter().cloned().collect();
        for r in &rotations[self.rotations_applied..] {
            if r.seq >= claim.size {
                break;
            }
            self.rotations_applied += 1;
            self.rotate(r, cp, &valid, findings);
        }

        let signers: Vec<&VerifierKey> =
            self.active.iter().filter(|&k| valid.contains(k)).collect();
        let trusted_now = !signers.is_empty();
        for key in &signers {
            let label = key_label(key);
            if !self.keys.contains(&label) {
                self.keys.push(label);
            }
        }
        if !trusted_now {
            if let Some(key) = self.retired.iter().find(|k| valid.contains(k)) {
                findings.add(
                    Code::CheckpointRetiredKey,
                    Some(&cp.loc),
                    format!(
                        "size {} is signed only by {}, retired by a key.rotated record before it",
                        claim.size,
                        key_label(key)
                    ),
                );
            } else {
                let names: Vec<String> = cp
                    .note
                    .signatures
                    .iter()
                    .map(|s| format!("{}+{}", s.name, hex::encode(s.id)))
                    .collect();
                findings.add(
                    Code::CheckpointUntrusted,
                    Some(&cp.loc),
                    format!(
                        "size {}: no valid signature by a trusted key (signed as {})",
                        claim.size,
                        names.join(", ")
                    ),
                );
            }
        }

        if claim.size > size {
            findings.add(
                Code::CheckpointOverClaims,
                Some(&cp.loc),
                format!(
                    "claims {} records; the log holds {size}: truncated, or a forged claim",
                    claim.size
                ),
            );
        } else if let Some(root) = root {
            if *root != claim.root {
                findings.add(
                    Code::CheckpointRootMismatch,
                    Some(&cp.loc),
                    format!(
                        "root {} at size {} is not the records' root {}",
                        record::encode_hash(&claim.root),
                        claim.size,
                        record::encode_hash(root)
                    ),
                );
            } else if trusted_now {
                self.covered = self.covered.max(claim.size);
            }
        }

        if !valid.is_empty() {
            match self.signed {
                Some((at, root, line)) if at == claim.size && root != claim.root => findings.add(
                    Code::CheckpointFork,
                    Some(&cp.loc),
                    format!(
                        "size {} is also signed on line {line} with another root: a fork",
                        claim.size
                    ),
                ),
                Some((at, ..)) if at == claim.size => {}
                _ => self.signed = Some((claim.size, claim.root, cp.loc.line)),
            }
        }
    }

    /// Apply a `key.rotated` record at the first checkpoint that covers it: the new key is
    /// trusted only if that checkpoint is co-signed by the old key (in force) and the new one.
    fn rotate(&mut self, r: &Rotation, cp: &Noted, valid: &[VerifierKey], findings: &mut Findings) {
        let old_active = self.active.contains(&r.old);
        let old_signed = valid.contains(&r.old);
        let new_signed = valid.contains(&r.new);
        if old_active && old_signed && new_signed {
            self.active.retain(|k| k != &r.old);
            self.retired.push(r.old.clone());
            if !self.active.contains(&r.new) {
                self.active.push(r.new.clone());
            }
            if !self.ever_trusted.contains(&r.new) {
                self.ever_trusted.push(r.new.clone());
            }
            return;
        }
        let mut why = Vec::new();
        if !old_active {
            why.push(format!(
                "the old key {} is not a trusted key in force",
                key_label(&r.old)
            ));
        }
        if !old_signed {
            why.push("the old key did not sign it".to_string());
        }
        if !new_signed {
            why.push(format!("the new key {} did not sign it", key_label(&r.new)));
        }
        findings.add(
            Code::RotationUnsigned,
            Some(&r.loc),
            format!(
                "the first checkpoint covering this rotation ({}:{}, size {}) is not co-signed: {}",
                cp.loc.file,
                cp.loc.line,
                cp.note.checkpoint.size,
                why.join("; ")
            ),
        );
        // The log says the old key is retired; the new one never earned trust.
        if old_active {
            self.active.retain(|k| k != &r.old);
            self.retired.push(r.old.clone());
        }
    }
}

/// Judge one anchor of this log: `root` is the records' root at its size, None when it claims
/// more (`size` records) or the segments before it are archived.
fn judge_anchor(
    anchor: &Noted,
    root: Option<&Hash>,
    size: u64,
    keys: &[VerifierKey],
    findings: &mut Findings,
) {
    let claim = &anchor.note.checkpoint;
    if anchor.signed_by(keys).is_empty() {
        findings.add(
            Code::AnchorUntrusted,
            Some(&anchor.loc),
            format!("size {}: no valid signature by a trusted key", claim.size),
        );
    }
    if claim.size > size {
        findings.add(
            Code::AnchorAhead,
            Some(&anchor.loc),
            format!(
                "the anchor covers {} records; the log holds {size}: truncated or rolled back",
                claim.size
            ),
        );
    } else if let Some(root) = root
        && *root != claim.root
    {
        findings.add(
            Code::AnchorMismatch,
            Some(&anchor.loc),
            format!(
                "the anchor's root at size {} is not the log's: rewritten or forked",
                claim.size
            ),
        );
    }
}

fn judge_state(
    origin: Option<&str>,
    saved: &SavedState,
    path: &Path,
    roots: &BTreeMap<u64, Hash>,
    size: u64,
    findings: &mut Findings,
) {
    let loc = Loc {
        file: path.display().to_string(),
        ..Loc::default()
    };
    let origin = origin.unwrap_or_default();
    if saved.origin != origin {
        findings.add(
            Code::StateRollback,
            Some(&loc),
            format!(
                "the saved state is of log {:?}; this is {origin:?}",
                saved.origin
            ),
        );
    } else if saved.size > size {
        findings.add(
            Code::StateRollback,
            Some(&loc),
            format!(
                "the log holds {size} records, fewer than the {} seen last time: truncated or \
                 an older copy restored",
                saved.size
            ),
        );
    } else if let Some(root) = roots.get(&saved.size)
        && record::decode_hash(&saved.root) != Some(*root)
    {
        findings.add(
            Code::StateRollback,
            Some(&loc),
            format!(
                "the root at the saved size {} is not the one seen last time: rewritten, or \
                 another copy restored",
                saved.size
            ),
        );
    }
}
