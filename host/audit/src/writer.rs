//! The audit log's one writer: a thread fed by a bounded channel that appends records with group
//! commit (one write and at most one fsync per batch), rotates segments, signs checkpoints and
//! writes heartbeats, under a lock so that two processes never write one log.
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

use crate::merkle::{Frontier, Hash};
use crate::note::{Checkpoint, NoteError, SigningKey};
use crate::record::{self, Head};
use crate::recover::{self, State};
use crate::segment::{self, CheckpointLine};

/// Why the audit log could not be opened or written. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file operation failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// Another process writes this log.
    #[error("{0}: another process holds the audit log's lock (one writer per log)")]
    Locked(String),
    /// A signing key problem.
    #[error(transparent)]
    Key(#[from] NoteError),
    /// The configured key is not the one the log was signed with, and no retiring key says how
    /// to get from one to the other.
    #[error(
        "the audit log was signed with key {log_key}, the configured key is {configured}: to \
         rotate, configure the old key as the retiring key for one start"
    )]
    KeyChanged {
        /// The key in force in the log.
        log_key: String,
        /// The configured key.
        configured: String,
    },
    /// The log cannot take records right now (a write or fsync failed).
    #[error("the audit log cannot be written: {0}")]
    Unavailable(String),
    /// The log was closed.
    #[error("the audit log is closed")]
    Closed,
}

/// How durable a record is when `append` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Handed to the operating system (survives a crash of the gateway, not a power loss).
    Written,
    /// fdatasync'ed (survives a power loss).
    Synced,
}

/// The operator's choice for request records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every decision record is fsync'ed before the request is forwarded.
    Strict,
    /// Decision records are written before forwarding and fsync'ed within `interval`.
    Batched {
        /// The longest a written record waits for its fsync.
        interval: Duration,
    },
}

impl Durability {
    /// The name written in the log.
    pub fn name(&self) -> &'static str {
        match self {
            Durability::Strict => "strict",
            Durability::Batched { .. } => "batched",
        }
    }
}

/// Injected failures, for drills and tests: the next writes or fsyncs fail while set.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail every write with ENOSPC.
    pub write: AtomicBool,
    /// Fail every fsync with EIO.
    pub sync: AtomicBool,
}

/// How the writer runs.
#[derive(Debug)]
pub struct Options {
    /// The log directory.
    pub dir: PathBuf,
    /// The log's origin (unique name).
    pub origin: String,
    /// The signing key.
    pub key: SigningKey,
    /// The previous key, for the one start that rotates keys.
    pub retiring_key: Option<SigningKey>,
    /// Durability of request records.
    pub durability: Durability,
    /// Rotate a segment at this size.
    pub segment_bytes: u64,
    /// Rotate a segment at this age.
    pub segment_age: Duration,
    /// Sign a checkpoint at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// Sign a checkpoint every this many records.
    pub checkpoint_records: u64,
    /// Write a heartbeat record this often.
    pub heartbeat: Duration,
    /// Records that may wait for the writer (backpressure beyond).
    pub queue: usize,
    /// Injected failures.
    pub faults: Arc<Faults>,
}

impl Options {
    /// The defaults of the design: 64 MiB or 1 h segments, checkpoints every second or 1000
    /// records, heartbeats every minute.
    pub fn new(dir: PathBuf, origin: String, key: SigningKey) -> Self {
        Options {
            dir,
            origin,
            key,
            retiring_key: None,
            durability: Durability::Batched {
                interval: Duration::from_millis(100),
            },
            segment_bytes: 64 << 20,
            segment_age: Duration::from_secs(3600),
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_records: 1000,
            heartbeat: Duration::from_secs(60),
            queue: 8192,
            faults: Arc::default(),
        }
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its `seq`.
    pub seq: u64,
    /// Its leaf hash.
    pub leaf: Hash,
}

/// What opening found.
#[derive(Debug, Clone)]
pub struct Opened {
    /// This start's epoch.
    pub epoch: u64,
    /// Records already in the log.
    pub records: u64,
    /// What recovery cut.
    pub cuts: Vec<recover::Cut>,
    /// Whether this start rotated the signing key.
    pub rotated: bool,
}

type Reply = flume::Sender<Result<Appended, AuditError>>;

enum Command {
    Append {
        kind: String,
        fields: Map<String, Value>,
        wait: Wait,
        reply: Option<Reply>,
    },
    Close {
        reply: flume::Sender<Result<(), AuditError>>,
    },
}

/// A handle on the log's writer. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct AuditLog {
    tx: flume::Sender<Command>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
    durability: Durability,
    dir: PathBuf,
}

#[derive(Debug, Default)]
struct Shared {
    /// The last batch failed; cleared by the next one that succeeds.
    failing: AtomicBool,
    /// Records durably appended.
    records: AtomicU64,
}

impl AuditLog {
    /// Lock the directory, recover, rotate the key if asked, and start the writer thread.
    pub fn open(options: Options) -> Result<(AuditLog, Opened), AuditError> {
        let dir = options.dir.clone();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = dir.join(segment::LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(AuditError::Locked(dir.display().to_string()));
            }
            Err(fs::TryLockError::Error(error)) => {
                return Err(AuditError::Io {
                    path: lock_path.display().to_string(),
                    error,
                });
            }
        }
        let state = recover::recover(&dir, &options.origin)?;
        let configured = options.key.verifier().to_string();
        let rotation = match &state.key {
            Some(log_key) if *log_key != configured => match &options.retiring_key {
                Some(old) if old.verifier().to_string() == *log_key => Some(log_key.clone()),
                _ => {
                    return Err(AuditError::KeyChanged {
                        log_key: log_key.clone(),
                        configured,
                    });
                }
            },
            _ => None,
        };
        // A rotation recorded but not yet covered by a checkpoint signed with both keys (a
        // crash in between) is completed now, which needs the retiring key again.
        let unfinished = state
            .rotation
            .as_ref()
            .filter(|(seq, _)| state.checkpointed.is_none_or(|size| size <= *seq))
            .map(|(_, old)| old.clone());
        if let Some(old) = &unfinished
            && rotation.is_none()
            && options
                .retiring_key
                .as_ref()
                .is_none_or(|k| k.verifier().to_string() != *old)
        {
            return Err(AuditError::KeyChanged {
                log_key: old.clone(),
                configured,
            });
        }
        let epoch = state.epoch + 1;
        let records = state.seq;
        let cuts = state.cuts.clone();
        let mut writer = Writer::new(options, state, epoch, lock)?;
        for cut in &cuts {
            writer.stage(
                "log.recovered",
                obj(json!({
                    "file": cut.file, "offset": cut.offset, "bytes": cut.bytes,
                    "quarantine": cut.quarantine.file_name().map(|n| n.to_string_lossy().into_owned()),
                    "reason": cut.reason,
                })),
            )?;
        }
        if let Some(old) = &rotation {
            writer.stage("key.rotated", obj(json!({"old": old, "new": configured})))?;
        }
        writer.commit(true)?;
        if rotation.is_some() || unfinished.is_some() {
            writer.checkpoint(true)?;
        }
        // The retiring key signs the rotation's checkpoint and nothing after it.
        writer.retiring = None;
        let shared = writer.shared.clone();
        let durability = writer.options.durability;
        let (tx, rx) = flume::bounded(writer.options.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io(&dir))?;
        Ok((
            AuditLog {
                tx,
                thread: std::sync::Mutex::new(Some(thread)),
                shared,
                durability,
                dir,
            },
            Opened {
                epoch,
                records,
                cuts,
                rotated: rotation.is_some(),
            },
        ))
    }

    /// Append a record and wait until it is as durable as `wait` says.
    pub async fn append(
        &self,
        kind: &str,
        fields: Map<String, Value>,
        wait: Wait,
    ) -> Result<Appended, AuditError> {
        let (reply, answer) = flume::bounded(1);
        let command = Command::Append {
            kind: kind.to_string(),
            fields,
            wait,
            reply: Some(reply),
        };
        self.tx
            .send_async(command)
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.recv_async().await.map_err(|_| AuditError::Closed)?
    }

    /// `append`, for callers outside an async runtime.
    pub fn append_blocking(
        &self,
        kind: &str,
        fields: Map<String, Value>,
        wait: Wait,
    ) -> Result<Appended, AuditError> {
        let (reply, answer) = flume::bounded(1);
        let command = Command::Append {
            kind: kind.to_string(),
            fields,
            wait,
            reply: Some(reply),
        };
        self.tx.send(command).map_err(|_| AuditError::Closed)?;
        answer.recv().map_err(|_| AuditError::Closed)?
    }

    /// Queue a record without waiting for it (completion records: the response has left). A
    /// failure to write it is logged by the writer.
    pub async fn submit(&self, kind: &str, fields: Map<String, Value>) -> Result<(), AuditError> {
        let command = Command::Append {
            kind: kind.to_string(),
            fields,
            wait: Wait::Written,
            reply: None,
        };
        self.tx
            .send_async(command)
            .await
            .map_err(|_| AuditError::Closed)
    }

    /// The wait that request records get under the operator's durability mode.
    pub fn request_wait(&self) -> Wait {
        match self.durability {
            Durability::Strict => Wait::Synced,
            Durability::Batched { .. } => Wait::Written,
        }
    }

    /// The durability mode.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Whether the last write or fsync failed.
    pub fn failing(&self) -> bool {
        self.shared.failing.load(Ordering::Relaxed)
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flush, fsync, sign a final checkpoint and stop the writer. Later appends fail with
    /// `Closed`.
    pub fn close(&self) -> Result<(), AuditError> {
        let (reply, answer) = flume::bounded(1);
        if self.tx.send(Command::Close { reply }).is_err() {
            return Ok(());
        }
        let result = answer.recv().unwrap_or(Ok(()));
        if let Ok(mut thread) = self.thread.lock()
            && let Some(handle) = thread.take()
        {
            let _ = handle.join();
        }
        result
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + use<> {
    let path = path.display().to_string();
    move |error| AuditError::Io { path, error }
}

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The writer thread's state.
struct Writer {
    options: Options,
    retiring: Option<SigningKey>,
    shared: Arc<Shared>,
    epoch: u64,
    /// Next seq, last leaf and frontier, as committed to disk.
    seq: u64,
    prev: Hash,
    frontier: Frontier,
    /// The live segment: its number, file (None until the next record opens one), the length
    /// committed, and when it was opened.
    segment: u64,
    file: Option<File>,
    segment_len: u64,
    segment_opened: Instant,
    /// Record lines staged for the next write, and the state after them.
    staged: Vec<u8>,
    staged_seq: u64,
    staged_prev: Hash,
    staged_frontier: Frontier,
    checkpoints: File,
    checkpointed: u64,
    checkpointed_at: Instant,
    unsynced_since: Option<Instant>,
    heartbeat_at: Instant,
    _lock: File,
}

impl Writer {
    fn new(mut options: Options, state: State, epoch: u64, lock: File) -> Result<Self, AuditError> {
        let path = options.dir.join(segment::CHECKPOINTS);
        let checkpoints = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let file = match state.segment {
            0 => None,
            _ if state.segment_closed => None,
            n => {
                let path = options.dir.join(segment::name(n));
                Some(
                    OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .map_err(io(&path))?,
                )
            }
        };
        let age = state
            .segment_opened
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        let now = Instant::now();
        Ok(Writer {
            retiring: options.retiring_key.take(),
            shared: Arc::default(),
            epoch,
            seq: state.seq,
            prev: state.prev,
            staged_seq: state.seq,
            staged_prev: state.prev,
            staged_frontier: state.frontier.clone(),
            frontier: state.frontier,
            segment: state.segment,
            file,
            segment_len: state.segment_len,
            segment_opened: now.checked_sub(age).unwrap_or(now),
            staged: Vec::new(),
            checkpoints,
            checkpointed: state.checkpointed.unwrap_or(0).min(state.seq),
            checkpointed_at: now,
            unsynced_since: None,
            heartbeat_at: now,
            _lock: lock,
            options,
        })
    }

    /// Stage one record, opening a segment first if none is live. Nothing touches the disk.
    fn stage(&mut self, kind: &str, fields: Map<String, Value>) -> Result<Appended, AuditError> {
        if self.file.is_none() {
            self.open_segment()?;
        }
        Ok(self.stage_raw(kind, fields))
    }

    /// Close the live segment if it is too big or too old: `segment.close`, committed and
    /// synced, then a checkpoint. The next record opens the next segment. Runs between batches,
    /// so a segment may pass its size by one batch.
    fn rotate_if_due(&mut self) -> Result<(), AuditError> {
        let too_big = self.segment_len >= self.options.segment_bytes;
        let too_old = self.segment_opened.elapsed() >= self.options.segment_age;
        if self.file.is_none() || !(too_big || too_old) || !self.staged.is_empty() {
            return Ok(());
        }
        let next = self.segment + 1;
        self.stage_raw(
            "segment.close",
            obj(json!({"segment": self.segment, "next": next})),
        );
        self.commit(true)?;
        self.checkpoint(true)?;
        self.file = None;
        Ok(())
    }

    /// Create the next segment file and stage its `segment.open` record.
    fn open_segment(&mut self) -> Result<(), AuditError> {
        let next = self.segment + 1;
        let path = self.options.dir.join(segment::name(next));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        // A file left empty by a failed attempt is reused; one with content is not ours to touch.
        if file.metadata().map_err(io(&path))?.len() != 0 {
            return Err(AuditError::Unavailable(format!(
                "{}: a segment that should be new already has content",
                path.display()
            )));
        }
        File::open(&self.options.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.options.dir))?;
        self.file = Some(file);
        self.segment = next;
        self.segment_len = 0;
        self.segment_opened = Instant::now();
        let frontier = json!({
            "size": self.staged_frontier.size(),
            "hashes": self.staged_frontier.hashes().iter().map(record::encode_hash).collect::<Vec<_>>(),
        });
        let key = self.options.key.verifier().to_string();
        self.stage_raw(
            "segment.open",
            obj(json!({"segment": next, "frontier": frontier, "key": key})),
        );
        Ok(())
    }

    fn stage_raw(&mut self, kind: &str, fields: Map<String, Value>) -> Appended {
        let start = self.staged.len();
        record::write_line(
            &mut self.staged,
            &Head {
                log: &self.options.origin,
                seq: self.staged_seq,
                epoch: self.epoch,
                ts: SystemTime::now(),
                prev: self.staged_prev,
                kind,
            },
            &fields,
        );
        let leaf = crate::merkle::leaf_hash(&self.staged[start..self.staged.len() - 1]);
        let appended = Appended {
            seq: self.staged_seq,
            leaf,
        };
        self.staged_frontier.push(leaf);
        self.staged_prev = leaf;
        self.staged_seq += 1;
        appended
    }

    /// Write the staged lines in one write, and fsync if asked or if the batched interval is
    /// up. On failure the segment is cut back to its committed length and the staged records
    /// are dropped: nothing half-written stays, and no caller was told it was written.
    fn commit(&mut self, sync: bool) -> Result<(), AuditError> {
        let result = if self.staged.is_empty() {
            Ok(())
        } else {
            self.write_staged()
        };
        let result = result.and_then(|()| {
            let due = self
                .unsynced_since
                .is_some_and(|t| t.elapsed() >= self.batched_interval());
            if sync || due { self.sync() } else { Ok(()) }
        });
        match result {
            Ok(()) => {
                self.segment_len += self.staged.len() as u64;
                self.staged.clear();
                self.seq = self.staged_seq;
                self.prev = self.staged_prev;
                self.frontier = self.staged_frontier.clone();
                self.shared.failing.store(false, Ordering::Relaxed);
                self.shared.records.store(self.seq, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.rollback();
                self.shared.failing.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, "audit log write failed: records are refused until a write succeeds");
                Err(e)
            }
        }
    }

    fn write_staged(&mut self) -> Result<(), AuditError> {
        let path = self.options.dir.join(segment::name(self.segment));
        let Some(file) = self.file.as_mut() else {
            return Err(AuditError::Unavailable("no live segment".into()));
        };
        let result = if self.options.faults.write.load(Ordering::Relaxed) {
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            file.write_all(&self.staged)
        };
        // Until the commit succeeds the bytes count as unsynced, so that a rollback cuts them.
        self.unsynced_since.get_or_insert_with(Instant::now);
        result.map_err(io(&path))
    }

    fn sync(&mut self) -> Result<(), AuditError> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        let path = self.options.dir.join(segment::name(self.segment));
        let result = if self.options.faults.sync.load(Ordering::Relaxed) {
            Err(std::io::Error::from_raw_os_error(5)) // EIO
        } else {
            file.sync_data()
        };
        result.map_err(io(&path))?;
        self.unsynced_since = None;
        Ok(())
    }

    /// Undo a failed commit: cut the live segment back to its committed length and forget the
    /// staged records. A segment with nothing committed is reopened by the next record.
    fn rollback(&mut self) {
        let committed = self.segment_len;
        if let Some(file) = &self.file
            && let Err(e) = file.set_len(committed)
        {
            tracing::error!(error = %e, "audit log: cannot cut a failed write back; recovery at the next start will");
        }
        if committed == 0 {
            self.file = None;
            self.segment -= 1;
        }
        self.staged.clear();
        self.staged_seq = self.seq;
        self.staged_prev = self.prev;
        self.staged_frontier = self.frontier.clone();
        self.unsynced_since = None;
    }

    fn batched_interval(&self) -> Duration {
        match self.options.durability {
            Durability::Strict => Duration::ZERO,
            Durability::Batched { interval } => interval,
        }
    }

    /// Sign a checkpoint over everything committed, if there is anything new (or `force`).
    fn checkpoint(&mut self, force: bool) -> Result<(), AuditError> {
        if self.seq == self.checkpointed && !force {
            return Ok(());
        }
        self.sign_checkpoint(self.frontier.size(), self.frontier.root())
    }

    fn sign_checkpoint(&mut self, size: u64, root: Hash) -> Result<(), AuditError> {
        let checkpoint = Checkpoint {
            origin: self.options.origin.clone(),
            size,
            root,
        };
        let mut keys = vec![&self.options.key];
        keys.extend(self.retiring.as_ref());
        let line = CheckpointLine {
            ts: record::format_ts(SystemTime::now()),
            segment: self.segment,
            note: checkpoint.sign(&keys),
        };
        let mut text = serde_json::to_vec(&line).unwrap_or_default();
        text.push(b'\n');
        let path = self.options.dir.join(segment::CHECKPOINTS);
        self.checkpoints.write_all(&text).map_err(io(&path))?;
        self.checkpoints.sync_data().map_err(io(&path))?;
        self.checkpointed = size;
        self.checkpointed_at = Instant::now();
        Ok(())
    }

    /// The thread's loop: take a batch, stage it, commit it, answer it; between batches, the
    /// timers (fsync of batched records, checkpoints, heartbeats).
    fn run(mut self, rx: flume::Receiver<Command>) {
        let mut batch: Vec<Command> = Vec::new();
        loop {
            let timeout = self.next_deadline();
            match rx.recv_timeout(timeout) {
                Ok(command) => batch.push(command),
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => {
                    if let Err(e) = self.shutdown() {
                        tracing::error!(error = %e, "audit log: final checkpoint failed");
                    }
                    return;
                }
            }
            batch.extend(rx.try_iter().take(4096));
            let appends = batch.iter().any(|c| matches!(c, Command::Append { .. }));
            let rotated = if appends {
                self.rotate_if_due()
            } else {
                Ok(())
            };
            if let Err(e) = rotated {
                tracing::error!(error = %e, "audit segment rotation failed; the live segment continues");
            }
            let mut close = None;
            let mut sync = false;
            let mut waiting = Vec::new();
            for command in batch.drain(..) {
                match command {
                    Command::Append {
                        kind,
                        fields,
                        wait,
                        reply,
                    } => {
                        sync |= wait == Wait::Synced;
                        let appended = self.stage(&kind, fields);
                        if let Some(reply) = reply {
                            waiting.push((reply, appended));
                        }
                    }
                    Command::Close { reply } => close = Some(reply),
                }
            }
            if self.heartbeat_at.elapsed() >= self.options.heartbeat {
                self.heartbeat_at = Instant::now();
                let _ = self.stage("heartbeat", Map::new());
            }
            let committed = self.commit(sync);
            for (reply, appended) in waiting {
                let answer = match (&committed, appended) {
                    (Ok(()), Ok(a)) => Ok(a),
                    (Err(e), _) => Err(AuditError::Unavailable(e.to_string())),
                    (_, Err(e)) => Err(e),
                };
                let _ = reply.send(answer);
            }
            let due = self.seq - self.checkpointed >= self.options.checkpoint_records
                || (self.seq > self.checkpointed
                    && self.checkpointed_at.elapsed() >= self.options.checkpoint_interval);
            if committed.is_ok() && due {
                // A checkpoint covers synced records only.
                if let Err(e) = self.sync().and_then(|()| self.checkpoint(false)) {
                    self.shared.failing.store(true, Ordering::Relaxed);
                    tracing::error!(error = %e, "audit checkpoint failed");
                }
            }
            if let Some(reply) = close {
                let _ = reply.send(self.shutdown());
                return;
            }
        }
    }

    fn next_deadline(&self) -> Duration {
        let mut next = self
            .options
            .heartbeat
            .saturating_sub(self.heartbeat_at.elapsed());
        if let Some(since) = self.unsynced_since {
            next = next.min(self.batched_interval().saturating_sub(since.elapsed()));
        }
        if self.seq > self.checkpointed {
            next = next.min(
                self.options
                    .checkpoint_interval
                    .saturating_sub(self.checkpointed_at.elapsed()),
            );
        }
        next.max(Duration::from_millis(1))
    }

    fn shutdown(&mut self) -> Result<(), AuditError> {
        self.commit(true)?;
        self.checkpoint(false)
    }
}
