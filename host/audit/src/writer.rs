//! The audit log's one writer: its state behind one lock, a queue of records waiting for the
//! next write, and a thread that fdatasyncs, rotates segments, signs checkpoints and writes
//! heartbeats, under a file lock so that two processes never write one log.
//!
//! Group commit without hand-offs: a `Wait::Written` record ([`AuditLog::append_fields`], the
//! gateway's decisions) goes into the queue, its caller gives way once to the other tasks ready
//! on its thread, and then the first waiting caller to find the writer's lock free stages and
//! writes everything queued in one write(2), answering every caller it wrote for. Records
//! submitted without waiting (completions) go out with the next such write. No thread is woken
//! per record: in the gateway, waking a writer thread and then the waiting task cost several
//! times the record itself. The writer thread takes the queue instead only when it must: while
//! it holds the lock for an fsync (a runtime worker must not wait that long), when a segment
//! has to be opened or rotated, after a failure, and for records nobody waits for that no
//! caller's write took within `QUEUED_AT_MOST`. `Wait::Synced` records (strict durability, the
//! gateway's own events) go through its channel, so that their fsyncs are grouped. Fields are serialised on the caller's
//! thread ([`Fields::from_serialize`] of a `#[derive(Serialize)]` struct), so that staging only
//! writes the head, copies the fields and hashes the line; the `Map` API
//! ([`AuditLog::append`]) converts on the caller's thread and stores the same bytes.
//!
//! Guarantees: a waiter is answered only after its batch's write(2) (`Wait::Written`) or
//! fdatasync (`Wait::Synced`; one such waiter makes the whole batch sync before anyone is
//! answered); a failed write or fdatasync cuts the batch back and fails every waiter of it. A
//! checkpoint covers only records whose fdatasync succeeded (`Writer::synced`; after a failed
//! fdatasync the records written before it stay uncovered until one succeeds), and its line is
//! fdatasync'ed before the next batch is taken. Written records are fdatasync'ed, and queued
//! ones written (within `QUEUED_AT_MOST`) and fdatasync'ed, within the batched interval (the
//! first record queued while the writer thread has nothing to do wakes it). Checkpoints are
//! signed at the first sync point after every `checkpoint_records` records, at least every
//! `checkpoint_interval` while records arrive, at rotation and at shutdown.
use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::task::{Context, Poll, Waker};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

use crate::merkle::{Frontier, Hash};
use crate::note::{Checkpoint, NoteError, SigningKey};
use crate::record::{self, Fields, Head};
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
    /// Sign a checkpoint at least this often while records arrive (fdatasync'ing the records
    /// first if they are not yet).
    pub checkpoint_interval: Duration,
    /// Sign a checkpoint every this many records: at the first fdatasync of the segment after
    /// the last of them (a checkpoint covers fdatasync'ed records only, and records are not
    /// fdatasync'ed early for it), so within the batched interval under `Batched`, at once
    /// under `Strict`; `checkpoint_interval` bounds it in any case.
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

#[derive(Debug)]
enum Command {
    Append {
        kind: Cow<'static, str>,
        fields: Fields,
        wait: Wait,
        reply: Option<Reply>,
    },
    Close {
        reply: flume::Sender<Result<(), AuditError>>,
    },
    /// Records were queued while the writer thread had nothing to do: it schedules their
    /// write and fdatasync within the batched interval.
    Schedule,
    /// Callers wait for queued records that only the writer thread can write now: it takes
    /// the queue at once.
    Flush,
}

/// A one-shot answer from the writer to one caller: one allocation (the `Arc`), one
/// uncontended lock on each side, and a wake (the task's waker, or an unpark for a blocking
/// caller). Cheaper than a channel per record.
#[derive(Debug)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Debug)]
enum SlotState {
    /// Not answered yet; whom to wake when it is.
    Waiting(Option<Waiter>),
    /// Answered, not yet taken.
    Answered(Result<Appended, AuditError>),
    /// Taken by the caller.
    Taken,
}

#[derive(Debug)]
enum Waiter {
    Task(Waker),
    Thread(Thread),
}

impl Slot {
    fn new() -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Waiting(None)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answer (the first answer wins) and wake the caller, outside the lock.
    fn answer(&self, answer: Result<Appended, AuditError>) {
        let waiter = {
            let mut state = self.lock();
            match std::mem::replace(&mut *state, SlotState::Answered(answer)) {
                SlotState::Waiting(waiter) => waiter,
                already => {
                    *state = already;
                    None
                }
            }
        };
        match waiter {
            Some(Waiter::Task(waker)) => waker.wake(),
            Some(Waiter::Thread(thread)) => thread.unpark(),
            None => {}
        }
    }

    /// The answer if there is one, else remember `waiter` (unless it is the same task's).
    fn take_or_wait(
        &self,
        waiter: impl FnOnce(Option<&Waiter>) -> Option<Waiter>,
    ) -> Option<Result<Appended, AuditError>> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, SlotState::Taken) {
            SlotState::Answered(answer) => Some(answer),
            SlotState::Taken => Some(Err(AuditError::Closed)),
            SlotState::Waiting(old) => {
                let new = waiter(old.as_ref()).or(old);
                *state = SlotState::Waiting(new);
                None
            }
        }
    }
}

/// The writer's end of a [`Slot`]. Dropped unanswered (the writer stopped), it answers
/// `Closed`.
#[derive(Debug)]
struct Reply(Option<Arc<Slot>>);

impl Reply {
    fn send(mut self, answer: Result<Appended, AuditError>) {
        if let Some(slot) = self.0.take() {
            slot.answer(answer);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.answer(Err(AuditError::Closed));
        }
    }
}

/// The caller's end of a [`Slot`].
#[derive(Debug)]
struct Answer(Arc<Slot>);

impl Answer {
    fn pair() -> (Reply, Answer) {
        let slot = Slot::new();
        (Reply(Some(slot.clone())), Answer(slot))
    }

    /// Whether the answer has come.
    fn answered(&self) -> bool {
        matches!(*self.0.lock(), SlotState::Answered(_))
    }

    /// Park this thread until the answer comes.
    fn wait(self) -> Result<Appended, AuditError> {
        loop {
            let answer = self.0.take_or_wait(|old| match old {
                Some(Waiter::Thread(_)) => None,
                _ => Some(Waiter::Thread(std::thread::current())),
            });
            if let Some(answer) = answer {
                return answer;
            }
            std::thread::park();
        }
    }
}

/// Gives way once to the other tasks ready on this thread: wakes itself and is pending the
/// first time it is polled (the runtime puts a task that wakes itself at the back of its
/// queue), ready the second.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Future for Answer {
    type Output = Result<Appended, AuditError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = self.0.take_or_wait(|old| match old {
            Some(Waiter::Task(waker)) if waker.will_wake(cx.waker()) => None,
            _ => Some(Waiter::Task(cx.waker().clone())),
        });
        match answer {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        }
    }
}

/// A handle on the log's writer. Cheap to share (`Arc`).
pub struct AuditLog {
    tx: flume::Sender<Command>,
    writer: Arc<Mutex<Writer>>,
    /// The most records the queue holds (then callers hand theirs to the channel, which
    /// waits).
    queue_limit: usize,
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
    /// The writer's lock is held across an fsync.
    syncing: AtomicBool,
    /// `Wait::Written` records waiting for the next write.
    queue: Mutex<Queue>,
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything queued, swapped into `into` (which must be empty: its buffers go back to the
    /// queue for reuse), and since when the oldest of it waited.
    fn take_queue(&self, into: &mut Queued) -> Option<Instant> {
        debug_assert!(into.records.is_empty() && into.bytes.is_empty());
        let mut queue = self.lock_queue();
        std::mem::swap(&mut queue.queued, into);
        queue.since.take()
    }
}

/// `Wait::Written` records waiting for the next write: taken by whoever writes first, a caller
/// on its own thread ([`AuditLog::append_fields`]) or the writer thread (at the latest within
/// the batched interval).
#[derive(Debug, Default)]
struct Queue {
    queued: Queued,
    /// Since when the oldest record waits.
    since: Option<Instant>,
    /// The writer thread will look within the batched interval anyway: a new record need not
    /// wake it.
    scheduled: bool,
    /// The log is closed: nothing more is queued.
    closed: bool,
}

/// Queued records: each one's kind and answer, and all their fields' bytes back to back. The
/// fields are copied in by the caller, who frees its own buffer (a buffer freed on another
/// thread than the one that made it is the allocator's slow path); the two buffers here are
/// swapped between the queue and the writer and reused, so a queued record costs no allocation.
#[derive(Debug, Default)]
struct Queued {
    records: Vec<QueuedRecord>,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct QueuedRecord {
    kind: Cow<'static, str>,
    /// Its fields: the next `len` bytes of [`Queued::bytes`].
    len: usize,
    reply: Option<Reply>,
}

/// The most fields' bytes a drained [`Queued`] keeps for reuse.
const QUEUED_BYTES_KEPT: usize = 1 << 20;

/// A record the queue did not take (it is full, or the log is closed): its parts, given back.
struct Refused {
    kind: Cow<'static, str>,
    fields: Fields,
    reply: Option<Reply>,
}

impl Refused {
    fn into_command(self) -> Command {
        Command::Append {
            kind: self.kind,
            fields: self.fields,
            wait: Wait::Written,
            reply: self.reply,
        }
    }
}

/// How long a record nobody waits for (a completion) stays queued when no caller's write takes
/// it: then the writer thread writes it (sooner under a shorter batched interval). A crash of
/// the process in between loses it; under load the next decision's write takes it within
/// microseconds.
const QUEUED_AT_MOST: Duration = Duration::from_millis(10);

/// What a caller waiting in the queue does next.
enum Turn {
    /// Its record is written (or failed): the answer is there.
    Done,
    /// Another caller is writing: give way, then look again.
    Again,
    /// The writer thread takes the queue: wait for the answer.
    Wait,
}

/// What a staged batch asks of its commit.
#[derive(Default)]
struct Asks {
    /// An fdatasync before anyone is answered.
    sync: bool,
    /// The log's close, after it.
    close: Option<flume::Sender<Result<(), AuditError>>>,
}

/// The earlier of two instants, if any.
fn oldest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Answer the callers of a committed batch: a failed commit fails every one of them.
fn answer_all(
    replies: &mut Vec<(Reply, Result<Appended, AuditError>)>,
    committed: &Result<(), AuditError>,
) {
    for (reply, appended) in replies.drain(..) {
        reply.send(match committed {
            Ok(()) => appended,
            Err(e) => Err(AuditError::Unavailable(e.to_string())),
        });
    }
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
                }))
                .as_bytes(),
            )?;
        }
        if let Some(old) = &rotation {
            writer.stage(
                "key.rotated",
                obj(json!({"old": old, "new": configured})).as_bytes(),
            )?;
        }
        writer.commit(true)?;
        if rotation.is_some() || unfinished.is_some() {
            writer.checkpoint(true)?;
        }
        // The retiring key signs the rotation's checkpoint and nothing after it.
        writer.retiring = None;
        let shared = writer.shared.clone();
        let durability = writer.options.durability;
        let queue_limit = writer.options.queue.max(1);
        let (tx, rx) = flume::bounded(queue_limit);
        let writer = Arc::new(Mutex::new(writer));
        let thread = {
            let writer = writer.clone();
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || Writer::run(&writer, rx))
                .map_err(io(&dir))?
        };
        Ok((
            AuditLog {
                tx,
                writer,
                queue_limit,
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
    ///
    /// A thin wrapper over [`append_fields`](Self::append_fields): the map is serialised
    /// (and freed) on the caller's thread.
    pub async fn append(
        &self,
        kind: &str,
        fields: Map<String, Value>,
        wait: Wait,
    ) -> Result<Appended, AuditError> {
        let fields = Fields::from_map(&fields);
        self.append_fields(kind.to_string(), fields, wait).await
    }

    /// `append`, for callers outside an async runtime.
    pub fn append_blocking(
        &self,
        kind: &str,
        fields: Map<String, Value>,
        wait: Wait,
    ) -> Result<Appended, AuditError> {
        let fields = Fields::from_map(&fields);
        self.append_fields_blocking(kind.to_string(), fields, wait)
    }

    /// Queue a record without waiting for it (completion records: the response has left),
    /// unless the queue is full: then it waits until the writer thread has written it.
    pub async fn submit(&self, kind: &str, fields: Map<String, Value>) -> Result<(), AuditError> {
        let fields = Fields::from_map(&fields);
        self.submit_fields(kind.to_string(), fields).await
    }

    /// Append a record whose fields were serialised by the caller ([`Fields::from_serialize`]
    /// of a `#[derive(Serialize)]` struct) and wait until it is as durable as `wait` says. The
    /// fast path: the writer only adds the head, hashes the line and writes it.
    ///
    /// A `Wait::Written` record is written by the first of the waiting callers to look after
    /// giving way once to the other tasks ready on its thread, together with every record
    /// queued by then: group commit with no hand-off to the writer thread.
    pub async fn append_fields(
        &self,
        kind: impl Into<Cow<'static, str>>,
        fields: Fields,
        wait: Wait,
    ) -> Result<Appended, AuditError> {
        let (reply, answer) = Answer::pair();
        let command = match self.queue_or_hand_over(kind.into(), fields, wait, reply) {
            Ok(()) => loop {
                YieldOnce(false).await;
                match self.write_queued(&answer) {
                    Turn::Done | Turn::Wait => return answer.await,
                    Turn::Again => {}
                }
            },
            Err(command) => command,
        };
        self.tx
            .send_async(command)
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.await
    }

    /// `append_fields`, for callers outside an async runtime.
    pub fn append_fields_blocking(
        &self,
        kind: impl Into<Cow<'static, str>>,
        fields: Fields,
        wait: Wait,
    ) -> Result<Appended, AuditError> {
        let (reply, answer) = Answer::pair();
        let command = match self.queue_or_hand_over(kind.into(), fields, wait, reply) {
            Ok(()) => loop {
                match self.write_queued(&answer) {
                    Turn::Done | Turn::Wait => return answer.wait(),
                    Turn::Again => std::thread::yield_now(),
                }
            },
            Err(command) => command,
        };
        self.tx.send(command).map_err(|_| AuditError::Closed)?;
        answer.wait()
    }

    /// `submit` with fields serialised by the caller. A record the queue refuses (it is full)
    /// goes to the writer thread, and this waits until it is written: what the caller does
    /// next is recorded after it.
    pub async fn submit_fields(
        &self,
        kind: impl Into<Cow<'static, str>>,
        fields: Fields,
    ) -> Result<(), AuditError> {
        let Err(refused) = self.queue(kind.into(), fields, None) else {
            return Ok(());
        };
        let (reply, answer) = Answer::pair();
        let command = Refused {
            reply: Some(reply),
            ..refused
        }
        .into_command();
        self.tx
            .send_async(command)
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.await.map(|_| ())
    }

    /// `submit_fields` without awaiting, for callers that cannot (a response body as it ends):
    /// the record is queued for the next write (a caller's, or the writer thread's within the
    /// batched interval). When it could only be taken by waiting (the queue is full, or the
    /// log is closed), the record comes back: send it with
    /// [`submit_fields`](Self::submit_fields), which waits (or says `Closed`).
    pub fn try_submit_fields(
        &self,
        kind: impl Into<Cow<'static, str>>,
        fields: Fields,
    ) -> Result<(), Unsent> {
        self.queue(kind.into(), fields, None)
            .map_err(|Refused { kind, fields, .. }| Unsent { kind, fields })
    }

    /// Queue a `Wait::Written` record for the callers' next write; a `Wait::Synced` one, or one
    /// the queue refuses, comes back as the command to send to the writer thread.
    fn queue_or_hand_over(
        &self,
        kind: Cow<'static, str>,
        fields: Fields,
        wait: Wait,
        reply: Reply,
    ) -> Result<(), Command> {
        match wait {
            Wait::Written => self
                .queue(kind, fields, Some(reply))
                .map_err(Refused::into_command),
            Wait::Synced => Err(Command::Append {
                kind,
                fields,
                wait,
                reply: Some(reply),
            }),
        }
    }

    /// Put a `Wait::Written` record in the queue, waking the writer thread if it does not
    /// already have to look within the batched interval. Gives the record back when the queue
    /// is full or closed.
    fn queue(
        &self,
        kind: Cow<'static, str>,
        fields: Fields,
        reply: Option<Reply>,
    ) -> Result<(), Refused> {
        let mut queue = self.shared.lock_queue();
        if queue.closed || queue.queued.records.len() >= self.queue_limit {
            return Err(Refused {
                kind,
                fields,
                reply,
            });
        }
        queue.queued.bytes.extend_from_slice(fields.as_bytes());
        queue.queued.records.push(QueuedRecord {
            kind,
            len: fields.as_bytes().len(),
            reply,
        });
        queue.since.get_or_insert_with(Instant::now);
        let wake = !std::mem::replace(&mut queue.scheduled, true);
        drop(queue);
        // Freed here, on the thread that made it.
        drop(fields);
        if wake {
            // A full channel wakes the thread anyway.
            let _ = self.tx.try_send(Command::Schedule);
        }
        Ok(())
    }

    /// Write everything queued, on the caller's thread, unless `answer` is answered already
    /// (another caller's write took it). The writer's lock is never waited for: while another
    /// caller (or the writer thread's batch) holds it, look `Again` after giving way; while
    /// it is held for an fsync, or the log is not in its steady state (a segment to open or
    /// rotate, a failure to recover from), the writer thread takes the queue and this caller
    /// `Wait`s for the answer.
    fn write_queued(&self, answer: &Answer) -> Turn {
        if answer.answered() {
            return Turn::Done;
        }
        let mut writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) if self.shared.syncing.load(Ordering::Relaxed) => {
                // Right after its fsync, the writer thread takes the queue.
                let _ = self.tx.try_send(Command::Flush);
                return Turn::Wait;
            }
            Err(TryLockError::WouldBlock) => return Turn::Again,
        };
        if !writer.steady() {
            drop(writer);
            let _ = self.tx.try_send(Command::Flush);
            return Turn::Wait;
        }
        let mut replies = Vec::new();
        writer.stage_queue(&mut replies);
        let committed = writer.commit(false);
        drop(writer);
        answer_all(&mut replies, &committed);
        Turn::Done
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

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// A record [`AuditLog::try_submit_fields`] could not take without waiting.
#[derive(Debug)]
pub struct Unsent {
    /// Its kind.
    pub kind: Cow<'static, str>,
    /// Its fields.
    pub fields: Fields,
}

/// Run an fsync under the writer's lock, telling the callers who find the lock busy to leave
/// their records to the writer thread.
fn syncing<T>(shared: &Shared, fsync: impl FnOnce() -> T) -> T {
    shared.syncing.store(true, Ordering::Relaxed);
    let result = fsync();
    shared.syncing.store(false, Ordering::Relaxed);
    result
}

fn lock(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    writer.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + use<> {
    let path = path.display().to_string();
    move |error| AuditError::Io { path, error }
}

/// Fields of the writer's own records (rare: segments, recoveries, rotations).
fn obj(value: Value) -> Fields {
    match value {
        Value::Object(map) => Fields::from_map(&map),
        _ => Fields::new(),
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
    /// Records known to be fdatasync'ed: every record below this `seq`. A checkpoint never
    /// covers more (`checkpoint` syncs first if it would).
    synced: u64,
    /// The last commit failed: every commit fdatasyncs until one succeeds, so that a failed
    /// fsync of acknowledged batched records keeps the log failing (and requests refused)
    /// until the disk takes a sync again, instead of being forgotten by the next write.
    recovering: bool,
    /// The live segment: its number, file (None until the next record opens one), the length
    /// committed, and when it was opened.
    segment: u64,
    file: Option<File>,
    segment_len: u64,
    segment_opened: Instant,
    /// The queue's records while they are staged (kept for its buffers).
    queued: Queued,
    /// Record lines staged for the next write, and the state after them.
    staged: Vec<u8>,
    staged_seq: u64,
    staged_prev: Hash,
    staged_frontier: Frontier,
    checkpoints: File,
    checkpointed: u64,
    checkpointed_at: Instant,
    /// Since when the live segment has changes (writes, or a cut by a rollback) that are not
    /// fdatasync'ed.
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
        // The records found at start may still be only in the page cache (the last process
        // crashed after a write, before its fdatasync): sync them before any checkpoint can
        // cover them. A live segment is synced by the first commit; a closed last segment
        // here.
        if state.segment != 0 && file.is_none() {
            let path = options.dir.join(segment::name(state.segment));
            File::open(&path)
                .and_then(|f| f.sync_data())
                .map_err(io(&path))?;
        }
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
            synced: if file.is_some() { 0 } else { state.seq },
            recovering: false,
            staged_seq: state.seq,
            staged_prev: state.prev,
            staged_frontier: state.frontier.clone(),
            frontier: state.frontier,
            segment: state.segment,
            unsynced_since: file.as_ref().map(|_| now),
            file,
            segment_len: state.segment_len,
            segment_opened: now.checked_sub(age).unwrap_or(now),
            queued: Queued::default(),
            staged: Vec::new(),
            checkpoints,
            checkpointed: state.checkpointed.unwrap_or(0).min(state.seq),
            checkpointed_at: now,
            heartbeat_at: now,
            _lock: lock,
            options,
        })
    }

    /// Stage one record, opening a segment first if none is live. Nothing touches the disk.
    fn stage(&mut self, kind: &str, fields: &[u8]) -> Result<Appended, AuditError> {
        if self.file.is_none() {
            self.open_segment()?;
        }
        Ok(self.stage_raw(kind, fields))
    }

    /// Whether a caller may write on its own thread: a live segment not due for rotation, no
    /// failed write or fdatasync to recover from (the thread's commits fdatasync until one
    /// succeeds). A closed log needs no check here: its queue takes nothing, so there is
    /// nothing to write.
    fn steady(&self) -> bool {
        self.file.is_some() && !self.rotation_due() && !self.recovering
    }

    fn rotation_due(&self) -> bool {
        self.segment_len >= self.options.segment_bytes
            || self.segment_opened.elapsed() >= self.options.segment_age
    }

    /// Close the live segment if it is too big or too old: `segment.close`, committed and
    /// synced, then a checkpoint. The next record opens the next segment. Runs between batches,
    /// so a segment may pass its size by one batch.
    fn rotate_if_due(&mut self) -> Result<(), AuditError> {
        if self.file.is_none() || !self.rotation_due() {
            return Ok(());
        }
        let next = self.segment + 1;
        self.stage_raw(
            "segment.close",
            obj(json!({"segment": self.segment, "next": next})).as_bytes(),
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
            .and_then(|d| syncing(&self.shared, || d.sync_all()))
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
            obj(json!({"segment": next, "frontier": frontier, "key": key})).as_bytes(),
        );
        Ok(())
    }

    /// `fields` are a [`Fields`]' bytes.
    fn stage_raw(&mut self, kind: &str, fields: &[u8]) -> Appended {
        let start = self.staged.len();
        record::write_fields_bytes_line(
            &mut self.staged,
            &Head {
                log: &self.options.origin,
                seq: self.staged_seq,
                epoch: self.epoch,
                ts: SystemTime::now(),
                prev: self.staged_prev,
                kind,
            },
            fields,
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

    /// Write the staged lines in one write, and fsync if asked (or while recovering from a
    /// failure). On failure the segment is cut back to its committed length and the staged
    /// records are dropped: nothing half-written stays, and no caller was told it was written.
    fn commit(&mut self, sync: bool) -> Result<(), AuditError> {
        let result = if self.staged.is_empty() {
            Ok(())
        } else {
            self.write_staged()
        };
        let result = result.and_then(|()| {
            if sync || self.recovering {
                self.sync()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                self.segment_len += self.staged.len() as u64;
                self.staged.clear();
                self.seq = self.staged_seq;
                self.prev = self.staged_prev;
                self.frontier.clone_from(&self.staged_frontier);
                if self.unsynced_since.is_none() {
                    self.synced = self.seq;
                }
                self.recovering = false;
                self.shared.failing.store(false, Ordering::Relaxed);
                self.shared.records.store(self.seq, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.rollback();
                self.recovering = true;
                self.shared.failing.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, "audit log write failed: records are refused until a write succeeds");
                Err(e)
            }
        }
    }

    fn write_staged(&mut self) -> Result<(), AuditError> {
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
        result.map_err(|error| self.segment_error(error))
    }

    /// An I/O error on the live segment, with its path: formatted only on failure (this runs
    /// once per batch, and the path costs three allocations).
    fn segment_error(&self, error: std::io::Error) -> AuditError {
        io(&self.options.dir.join(segment::name(self.segment)))(error)
    }

    /// fdatasync the live segment if it has unsynced changes. The caller moves `synced` on.
    fn sync(&mut self) -> Result<(), AuditError> {
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        if let Some(file) = self.file.as_ref() {
            let result = if self.options.faults.sync.load(Ordering::Relaxed) {
                Err(std::io::Error::from_raw_os_error(5)) // EIO
            } else {
                syncing(&self.shared, || file.sync_data())
            };
            result.map_err(|error| self.segment_error(error))?;
        }
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
        self.staged_frontier.clone_from(&self.frontier);
        // The cut itself, and any records of earlier batches that were written but not yet
        // synced, still need an fdatasync: `synced` stays where it was.
        self.unsynced_since = match self.file {
            Some(_) => Some(self.unsynced_since.unwrap_or_else(Instant::now)),
            None => None,
        };
    }

    fn batched_interval(&self) -> Duration {
        match self.options.durability {
            Durability::Strict => Duration::ZERO,
            Durability::Batched { interval } => interval,
        }
    }

    /// Sign a checkpoint over everything committed, if there is anything new (or `force`):
    /// fdatasync the segment first if some of it is not yet (a checkpoint covers fdatasync'ed
    /// records only), then write the line to `checkpoints.jsonl` and fdatasync it.
    fn checkpoint(&mut self, force: bool) -> Result<(), AuditError> {
        if self.seq == self.checkpointed && !force {
            return Ok(());
        }
        if self.synced != self.seq {
            self.sync()?;
            self.synced = self.seq;
        }
        let checkpoint = Checkpoint {
            origin: self.options.origin.clone(),
            size: self.frontier.size(),
            root: self.frontier.root(),
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
        syncing(&self.shared, || self.checkpoints.sync_data()).map_err(io(&path))?;
        self.checkpointed = checkpoint.size;
        self.checkpointed_at = Instant::now();
        Ok(())
    }

    /// The thread's loop: take a batch (the channel's commands and the queue), stage it,
    /// commit it, answer it; between batches, the timers (fsync of batched records,
    /// checkpoints, heartbeats). The writer's lock is held for a batch (callers meanwhile queue
    /// their records) and released while waiting.
    fn run(writer: &Mutex<Writer>, rx: flume::Receiver<Command>) {
        // Reused across batches: the commands taken, and the answers owed after the commit.
        let mut batch: Vec<Command> = Vec::new();
        let mut replies: Vec<(Reply, Result<Appended, AuditError>)> = Vec::new();
        loop {
            let timeout = {
                let writer = lock(writer);
                let mut queue = writer.shared.lock_queue();
                queue.scheduled =
                    !queue.queued.records.is_empty() || writer.unsynced_since.is_some();
                writer.next_deadline(queue.since)
            };
            let timed_out = match rx.recv_timeout(timeout) {
                Ok(command) => {
                    batch.push(command);
                    false
                }
                Err(flume::RecvTimeoutError::Timeout) => true,
                Err(flume::RecvTimeoutError::Disconnected) => {
                    if let Err(e) = lock(writer).shutdown() {
                        tracing::error!(error = %e, "audit log: final checkpoint failed");
                    }
                    return;
                }
            };
            batch.extend(rx.try_iter().take(4096));
            if !timed_out && batch.iter().all(|c| matches!(c, Command::Schedule)) {
                // Woken to set its timer, not to write: the callers write the queue.
                batch.clear();
                continue;
            }
            let close = lock(writer).take(&mut batch, &mut replies);
            if let Some(reply) = close {
                let _ = reply.send(lock(writer).shutdown());
                return;
            }
        }
    }

    /// Stage and commit one batch (the channel's commands and the queue), answer its callers,
    /// and sign the checkpoints due. Returns the reply of a `Close` in the batch.
    fn take(
        &mut self,
        batch: &mut Vec<Command>,
        replies: &mut Vec<(Reply, Result<Appended, AuditError>)>,
    ) -> Option<flume::Sender<Result<(), AuditError>>> {
        let queued_since = self.shared.take_queue(&mut self.queued);
        let appends = !self.queued.records.is_empty()
            || batch.iter().any(|c| matches!(c, Command::Append { .. }));
        let rotated = if appends {
            self.rotate_if_due()
        } else {
            Ok(())
        };
        if let Err(e) = rotated {
            tracing::error!(error = %e, "audit segment rotation failed; the live segment continues");
        }
        let due = oldest(self.unsynced_since, queued_since)
            .is_some_and(|t| t.elapsed() >= self.batched_interval());
        // The queue first: each of its records was queued before this take, and a command's
        // sender waits for its answer (a refused `submit_fields` too), so nothing queued now
        // can follow a command of this batch; a command may follow a queued record (the
        // `gateway.stop` after the last request's completion).
        self.stage_queued(replies);
        let asks = self.stage_batch(batch, replies);
        if self.heartbeat_at.elapsed() >= self.options.heartbeat {
            self.heartbeat_at = Instant::now();
            let _ = self.stage("heartbeat", &[]);
        }
        // Every waiter of the batch is answered only after the write (and the fdatasync, if
        // one of them asked for it), so that a failure of either fails them all and a
        // rolled-back record is never acknowledged.
        let committed = self.commit(due || asks.sync);
        answer_all(replies, &committed);
        // Checkpoints: every `checkpoint_records` records, signed at the first sync point
        // after (records are not fdatasync'ed just for a checkpoint: in batched mode that is
        // within the batched interval), and at least every `checkpoint_interval` while records
        // arrive (then syncing first if needed).
        let pending = self.seq - self.checkpointed;
        let by_count = pending >= self.options.checkpoint_records && self.synced == self.seq;
        let by_time =
            pending > 0 && self.checkpointed_at.elapsed() >= self.options.checkpoint_interval;
        if committed.is_ok()
            && (by_count || by_time)
            && let Err(e) = self.checkpoint(false)
        {
            self.shared.failing.store(true, Ordering::Relaxed);
            tracing::error!(error = %e, "audit checkpoint failed");
        }
        asks.close
    }

    /// Stage a batch's records, leaving the answers owed in `replies` (for after the commit).
    fn stage_batch(
        &mut self,
        batch: &mut Vec<Command>,
        replies: &mut Vec<(Reply, Result<Appended, AuditError>)>,
    ) -> Asks {
        let mut asks = Asks::default();
        for command in batch.drain(..) {
            match command {
                Command::Append {
                    kind,
                    fields,
                    wait,
                    reply,
                } => {
                    asks.sync |= wait == Wait::Synced;
                    let appended = self.stage(&kind, fields.as_bytes());
                    if let Some(reply) = reply {
                        replies.push((reply, appended));
                    }
                }
                Command::Close { reply } => asks.close = Some(reply),
                Command::Schedule | Command::Flush => {}
            }
        }
        asks
    }

    /// Take the queue and stage its records, leaving the answers owed in `replies`.
    fn stage_queue(&mut self, replies: &mut Vec<(Reply, Result<Appended, AuditError>)>) {
        self.shared.take_queue(&mut self.queued);
        self.stage_queued(replies);
    }

    /// Stage the records taken from the queue, then keep its buffers, emptied, for the next
    /// take.
    fn stage_queued(&mut self, replies: &mut Vec<(Reply, Result<Appended, AuditError>)>) {
        let mut queued = std::mem::take(&mut self.queued);
        let mut at = 0;
        for record in queued.records.drain(..) {
            let fields = &queued.bytes[at..at + record.len];
            at += record.len;
            let appended = self.stage(&record.kind, fields);
            if let Some(reply) = record.reply {
                replies.push((reply, appended));
            }
        }
        queued.bytes.clear();
        if queued.bytes.capacity() > QUEUED_BYTES_KEPT {
            queued.bytes = Vec::new();
        }
        self.queued = queued;
    }

    /// How long the thread may sleep: until the next heartbeat, write of records queued
    /// since `queued_since` that no caller wrote, fsync of batched records or checkpoint.
    fn next_deadline(&self, queued_since: Option<Instant>) -> Duration {
        let mut next = self
            .options
            .heartbeat
            .saturating_sub(self.heartbeat_at.elapsed());
        if let Some(since) = self.unsynced_since {
            next = next.min(self.batched_interval().saturating_sub(since.elapsed()));
        }
        if let Some(since) = queued_since {
            let wait = self.batched_interval().min(QUEUED_AT_MOST);
            next = next.min(wait.saturating_sub(since.elapsed()));
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

    /// Write what is queued, fsync, sign a final checkpoint, and take no more records.
    fn shutdown(&mut self) -> Result<(), AuditError> {
        self.shared.lock_queue().closed = true;
        let mut replies = Vec::new();
        self.stage_queue(&mut replies);
        let committed = self.commit(true);
        answer_all(&mut replies, &committed);
        committed?;
        self.checkpoint(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::SignedCheckpoint;
    use std::task::Wake;

    const ORIGIN: &str = "test.portcullis/writer";

    /// The sizes of the checkpoints in `dir`, in order.
    fn checkpoint_sizes(dir: &Path) -> Vec<u64> {
        std::fs::read_to_string(dir.join(segment::CHECKPOINTS))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let line: CheckpointLine = serde_json::from_str(l).expect("a checkpoint line");
                SignedCheckpoint::parse(&line.note)
                    .expect("a note")
                    .checkpoint
                    .size
            })
            .collect()
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn event(i: u64) -> Fields {
        Fields::from_serialize(&json!({ "i": i })).expect("fields")
    }

    /// Options for a log in `dir` whose writer thread writes nothing on its own for an hour:
    /// no fsync, checkpoint or heartbeat is due before the test ends.
    fn quiet(dir: &Path) -> Options {
        let mut options = Options::new(
            dir.to_path_buf(),
            ORIGIN.into(),
            SigningKey::generate(ORIGIN).expect("key"),
        );
        options.durability = Durability::Batched {
            interval: Duration::from_secs(3600),
        };
        options.checkpoint_records = u64::MAX;
        options.checkpoint_interval = Duration::from_secs(3600);
        options.heartbeat = Duration::from_secs(3600);
        options
    }

    #[test]
    fn written_records_are_checkpointed_at_the_next_sync_point_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = quiet(dir.path());
        options.checkpoint_records = 1;
        let (log, _) = AuditLog::open(options).expect("open");
        for i in 0..5 {
            log.append_fields_blocking("test.event", event(i), Wait::Written)
                .expect("append");
        }
        // Due by count since the first record, but nothing is fdatasync'ed yet.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(checkpoint_sizes(dir.path()), Vec::<u64>::new());
        let a = log
            .append_fields_blocking("test.event", event(5), Wait::Synced)
            .expect("append");
        wait_for("a checkpoint at the sync point", || {
            !checkpoint_sizes(dir.path()).is_empty()
        });
        assert_eq!(checkpoint_sizes(dir.path()), [a.seq + 1]);
        log.close().expect("close");
    }

    #[test]
    fn a_failed_fdatasync_keeps_checkpoints_off_the_records_it_left_unsynced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = quiet(dir.path());
        options.checkpoint_interval = Duration::from_millis(10);
        let trusted = vec![options.key.verifier()];
        let faults = options.faults.clone();
        let (log, _) = AuditLog::open(options).expect("open");
        let first = log
            .append_fields_blocking("test.event", event(0), Wait::Synced)
            .expect("append");
        wait_for("the first checkpoint", || {
            checkpoint_sizes(dir.path()).last() == Some(&(first.seq + 1))
        });
        faults.sync.store(true, Ordering::SeqCst);
        let mut last = first;
        for i in 1..4 {
            last = log
                .append_fields_blocking("test.event", event(i), Wait::Written)
                .expect("written: no fdatasync asked");
        }
        // This batch's fdatasync fails: it is cut back, and the three written records before
        // it are still not on stable storage.
        let refused = log.append_fields_blocking("test.event", event(4), Wait::Synced);
        assert!(
            matches!(refused, Err(AuditError::Unavailable(_))),
            "{refused:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            checkpoint_sizes(dir.path()).last(),
            Some(&(first.seq + 1)),
            "no checkpoint over records whose fdatasync has not succeeded"
        );
        faults.sync.store(false, Ordering::SeqCst);
        wait_for("a checkpoint over the written records", || {
            checkpoint_sizes(dir.path()).last() == Some(&(last.seq + 1))
        });
        log.close().expect("close");
        let report = crate::verify::verify(crate::verify::Options::new(dir.path(), trusted))
            .expect("verify runs");
        assert!(report.passed(), "{}", report.render_text());
    }

    /// The records in the log's segments, in order, as (seq, kind).
    fn stored(dir: &Path) -> Vec<(u64, String)> {
        stored_records(dir)
            .iter()
            .map(|record| {
                let seq = record["seq"].as_u64().expect("a seq");
                (seq, record["type"].as_str().expect("a type").to_string())
            })
            .collect()
    }

    /// The records in the log's segments, in order.
    fn stored_records(dir: &Path) -> Vec<Value> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("the log directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.starts_with("segment-"))
            .collect();
        names.sort();
        names
            .iter()
            .flat_map(|n| {
                let text = std::fs::read_to_string(dir.join(n)).expect("a segment");
                text.lines()
                    .map(|l| serde_json::from_str(l).expect("a record"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn callers_on_two_workers_write_every_record_and_each_is_in_the_file_when_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = quiet(dir.path());
        let trusted = vec![options.key.verifier()];
        let (log, _) = AuditLog::open(options).expect("open");
        let log = Arc::new(log);
        // A live segment first, so that the callers find the log in its steady state.
        log.append_fields_blocking("test.first", event(0), Wait::Synced)
            .expect("append");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime");
        let (tasks, each) = (64u64, 20u64);
        let answered = runtime.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let log = log.clone();
                    tokio::spawn(async move {
                        let mut seqs = Vec::new();
                        for i in 0..each {
                            let decision = log
                                .append_fields("test.decision", event(t * each + i), Wait::Written)
                                .await
                                .expect("a decision");
                            // Answered only once written: it is in the file now.
                            let segment = log.dir().join(segment::name(1));
                            let text = std::fs::read_to_string(segment).expect("the segment");
                            let in_file = text.contains(&format!(",\"seq\":{},", decision.seq));
                            assert!(
                                in_file,
                                "decision {} answered before its write",
                                decision.seq
                            );
                            seqs.push(decision.seq);
                            log.submit_fields("test.completion", event(i))
                                .await
                                .expect("a completion");
                        }
                        seqs
                    })
                })
                .collect();
            let mut seqs = Vec::new();
            for handle in handles {
                seqs.extend(handle.await.expect("a task"));
            }
            seqs
        });
        let mut unique = answered.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            answered.len(),
            "every decision has its own seq"
        );
        log.close().expect("close");
        let records = stored(dir.path());
        let count = |kind: &str| records.iter().filter(|(_, k)| k == kind).count() as u64;
        assert_eq!(count("test.decision"), tasks * each);
        assert_eq!(
            count("test.completion"),
            tasks * each,
            "close writes the queued ones"
        );
        let seqs: Vec<u64> = records.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (0..records.len() as u64).collect::<Vec<_>>());
        // Each record has its own fields (1 to 4 digits long, queued back to back): every
        // decision's `i` once, every completion's `i` once per task.
        let fields = |kind: &str| {
            let mut values: Vec<u64> = stored_records(dir.path())
                .iter()
                .filter(|r| r["type"] == kind)
                .map(|r| r["i"].as_u64().expect("the record's own field"))
                .collect();
            values.sort_unstable();
            values
        };
        assert_eq!(
            fields("test.decision"),
            (0..tasks * each).collect::<Vec<_>>()
        );
        let mut completions: Vec<u64> = (0..tasks).flat_map(|_| 0..each).collect();
        completions.sort_unstable();
        assert_eq!(fields("test.completion"), completions);
        let report = crate::verify::verify(crate::verify::Options::new(dir.path(), trusted))
            .expect("verify runs");
        assert!(report.passed(), "{}", report.render_text());
    }

    /// A gateway event goes to the writer thread, a completion to the queue: the event that
    /// follows a completion (the `gateway.stop` after the last response) is stored after it.
    #[test]
    fn a_command_is_stored_after_the_records_queued_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = AuditLog::open(quiet(dir.path())).expect("open");
        log.append_fields_blocking("test.first", event(0), Wait::Synced)
            .expect("append");
        assert!(log.try_submit_fields("test.queued", event(1)).is_ok());
        log.append_fields_blocking("test.event", event(2), Wait::Synced)
            .expect("append");
        log.close().expect("close");
        let kinds: Vec<String> = stored(dir.path())
            .into_iter()
            .map(|(_, kind)| kind)
            .filter(|kind| kind.starts_with("test."))
            .collect();
        assert_eq!(kinds, ["test.first", "test.queued", "test.event"]);
    }

    /// A full queue refuses a record; `submit_fields` then hands it to the writer thread and
    /// returns once it is written, after the record queued before it.
    #[test]
    fn a_record_the_full_queue_refused_is_written_after_the_queue_when_submit_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = quiet(dir.path());
        options.queue = 1;
        let (log, _) = AuditLog::open(options).expect("open");
        log.append_fields_blocking("test.first", event(0), Wait::Synced)
            .expect("append");
        let unsent = {
            // Nobody writes the queue meanwhile.
            let _writer = lock(&log.writer);
            assert!(log.try_submit_fields("test.queued", event(1)).is_ok());
            log.try_submit_fields("test.refused", event(2))
                .expect_err("the queue is full")
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(log.submit_fields(unsent.kind, unsent.fields))
            .expect("written");
        let kinds: Vec<String> = stored(dir.path())
            .into_iter()
            .map(|(_, kind)| kind)
            .filter(|kind| kind.starts_with("test."))
            .collect();
        assert_eq!(kinds, ["test.first", "test.queued", "test.refused"]);
        log.close().expect("close");
    }

    #[test]
    fn a_record_nobody_waits_for_is_written_and_fdatasynced_within_the_batched_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = quiet(dir.path());
        options.durability = Durability::Batched {
            interval: Duration::from_millis(50),
        };
        options.checkpoint_interval = Duration::from_millis(10);
        let (log, _) = AuditLog::open(options).expect("open");
        let first = log
            .append_fields_blocking("test.first", event(0), Wait::Synced)
            .expect("append");
        wait_for("a checkpoint over the first record", || {
            checkpoint_sizes(dir.path()).last() == Some(&(first.seq + 1))
        });
        log.try_submit_fields("test.completion", event(1))
            .expect("queued");
        // Nobody writes after it: the writer thread, woken by the queue, does.
        wait_for(
            "the queued record written and covered by a checkpoint",
            || checkpoint_sizes(dir.path()).last() == Some(&(first.seq + 2)),
        );
        assert_eq!(
            stored(dir.path()).last(),
            Some(&(first.seq + 1, "test.completion".to_string()))
        );
        log.close().expect("close");
    }

    #[test]
    fn a_closed_log_takes_no_more_records_and_gives_them_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = AuditLog::open(quiet(dir.path())).expect("open");
        log.append_fields_blocking("test.first", event(0), Wait::Synced)
            .expect("append");
        for i in 1..4 {
            log.try_submit_fields("test.completion", event(i))
                .expect("queued");
        }
        log.close().expect("close");
        assert_eq!(
            stored(dir.path()).len(),
            1 + 1 + 3,
            "segment.open, first, 3 queued"
        );
        let unsent = log
            .try_submit_fields("test.late", event(9))
            .expect_err("closed");
        assert_eq!(
            (unsent.kind.as_ref(), unsent.fields),
            ("test.late", event(9))
        );
        let appended = log.append_fields_blocking("test.late", event(9), Wait::Written);
        assert!(matches!(appended, Err(AuditError::Closed)), "{appended:?}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let submitted = runtime.block_on(log.submit_fields("test.late", event(9)));
        assert!(
            matches!(submitted, Err(AuditError::Closed)),
            "{submitted:?}"
        );
        assert_eq!(stored(dir.path()).len(), 5);
    }

    #[test]
    fn a_failed_write_on_a_callers_thread_fails_its_batch_and_the_log_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = quiet(dir.path());
        let trusted = vec![options.key.verifier()];
        let faults = options.faults.clone();
        let (log, _) = AuditLog::open(options).expect("open");
        log.append_fields_blocking("test.first", event(0), Wait::Synced)
            .expect("append");
        faults.write.store(true, Ordering::SeqCst);
        log.try_submit_fields("test.completion", event(1))
            .expect("queued");
        let refused = log.append_fields_blocking("test.decision", event(2), Wait::Written);
        assert!(
            matches!(refused, Err(AuditError::Unavailable(_))),
            "{refused:?}"
        );
        assert!(log.failing());
        faults.write.store(false, Ordering::SeqCst);
        // Recovering, the log takes records through the writer thread, fdatasync'ed.
        let taken = log
            .append_fields_blocking("test.decision", event(3), Wait::Written)
            .expect("the log recovers");
        assert!(!log.failing());
        log.close().expect("close");
        let kinds: Vec<String> = stored(dir.path()).into_iter().map(|(_, k)| k).collect();
        assert_eq!(kinds, ["segment.open", "test.first", "test.decision"]);
        assert_eq!(taken.seq, 2, "the failed batch left no seq behind");
        let report = crate::verify::verify(crate::verify::Options::new(dir.path(), trusted))
            .expect("verify runs");
        assert!(report.passed(), "{}", report.render_text());
    }

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_answer_wakes_its_task_and_a_dropped_reply_answers_closed() {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let (reply, mut answer) = Answer::pair();
        assert!(Pin::new(&mut answer).poll(&mut cx).is_pending());
        let appended = Appended {
            seq: 3,
            leaf: [7; 32],
        };
        reply.send(Ok(appended));
        assert!(flag.0.load(Ordering::SeqCst), "woken");
        assert!(matches!(
            Pin::new(&mut answer).poll(&mut cx),
            Poll::Ready(Ok(a)) if a == appended
        ));

        let (reply, answer) = Answer::pair();
        let waiter = std::thread::spawn(move || answer.wait());
        std::thread::sleep(Duration::from_millis(20));
        drop(reply);
        assert!(matches!(
            waiter.join().expect("the waiter"),
            Err(AuditError::Closed)
        ));
    }
}
