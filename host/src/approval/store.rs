//! Persistence of just-in-time approval requests, their grants and webhook delivery attempts: the [`Store`] trait and its embedded SQLite implementation, [`SqliteStore`].
//!
//! Times are milliseconds since the Unix epoch (`u64`). SQLite integers are
//! signed, so a time beyond `i64::MAX` (some 292 million years from now) is
//! stored as `i64::MAX` in the queried columns; it still compares as "the far
//! future". The request record itself is kept as JSON and round-trips exactly.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// Who asked: the verified principal's identity, as far as binding and display need it.
///
/// Binding (pending requests, grants) uses `(issuer, subject)` exactly;
/// `tenant` and `app_id` are informational only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requester {
    /// The principal's subject (`sub`).
    pub subject: String,
    /// The issuer that vouched for the subject.
    pub issuer: String,
    /// The principal's tenant, if any (informational).
    pub tenant: Option<String>,
    /// The client application, if any (informational).
    pub app_id: Option<String>,
}

/// Who decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approver {
    /// The approver's subject.
    pub subject: String,
    /// The issuer that vouched for the approver.
    pub issuer: String,
    /// A display name, if known.
    pub name: Option<String>,
}

/// The state of an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for a decision.
    Pending,
    /// An approver allowed it.
    Approved,
    /// An approver refused it.
    Denied,
    /// Nobody decided before it expired.
    Expired,
}

impl Status {
    /// The lowercase name, as serialized and stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown approval status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Status::Pending),
            "approved" => Ok(Status::Approved),
            "denied" => Ok(Status::Denied),
            "expired" => Ok(Status::Expired),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// A scope an approver grants instead of (in addition to) the exact request: any operation matching `operation` (a glob, matched by the caller, not by the store) on the same route, by the same requester, until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// The operation glob.
    pub operation: String,
    /// When the scope ends (ms since the epoch).
    pub until: u64,
}

/// An approver's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Who decided.
    pub by: Approver,
    /// When (ms since the epoch).
    pub at: u64,
    /// Approved (true) or denied (false).
    pub approved: bool,
    /// The approver's reason.
    pub reason: String,
    /// A wider scope granted along with the exact request, if any.
    pub scope: Option<Scope>,
}

/// One approval request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// Unique id.
    pub id: String,
    /// When it was made (ms since the epoch).
    pub created_at: u64,
    /// When it expires undecided (ms since the epoch).
    pub expires_at: u64,
    /// Its state.
    pub status: Status,
    /// Who asked.
    pub requester: Requester,
    /// The route it was made on.
    pub route: String,
    /// The operation it asks for.
    pub operation: String,
    /// The plugin that asked for approval.
    pub plugin: String,
    /// A one-line summary for approvers.
    pub summary: String,
    /// The masked request shown to approvers (method, redacted URL, some headers, body size and hash) — opaque JSON to the store.
    pub request: serde_json::Value,
    /// Hex SHA-256 of the request (method, URL, relevant headers, body).
    pub digest: String,
    /// The groups whose members may decide.
    pub approver_groups: Vec<String>,
    /// The decision, once made.
    pub decision: Option<Decision>,
}

/// Permission to forward: exact (bound to `digest`, single use) or scoped (bound to `operation`, a glob; reusable until expiry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// Unique id.
    pub id: String,
    /// The request whose approval made it.
    pub request_id: String,
    /// Whom it lets through (bound by issuer and subject).
    pub requester: Requester,
    /// The route it is valid on.
    pub route: String,
    /// Exact grants: the request digest it is bound to. None for a scoped grant.
    pub digest: Option<String>,
    /// Scoped grants: the operation glob. None for an exact grant.
    pub operation: Option<String>,
    /// When it was made (ms since the epoch).
    pub created_at: u64,
    /// When it ends (ms since the epoch).
    pub expires_at: u64,
    /// When an exact grant was used (single use); scoped grants are never marked used.
    pub used_at: Option<u64>,
}

/// One webhook delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The request it announced.
    pub request_id: String,
    /// Where it was sent (a configured target's name or URL).
    pub target: String,
    /// 1 for the first attempt, then 2, 3, …
    pub attempt: u32,
    /// When it was made (ms since the epoch).
    pub at: u64,
    /// Whether it was delivered.
    pub ok: bool,
    /// The HTTP status received, if any.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// What can go wrong in a [`Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (message includes the operation and the sqlite error; never row contents).
    #[error("approval store: {0}")]
    Database(String),
    /// No request with this id.
    #[error("no approval request {0}")]
    NotFound(String),
    /// The request was already decided or expired.
    #[error("approval request {id} is {status}, not pending")]
    NotPending {
        /// The request's id.
        id: String,
        /// Its current status (`Status::as_str`).
        status: String,
    },
    /// A request with this id exists already.
    #[error("approval request {0} exists already")]
    Duplicate(String),
}

/// The persistence of approval requests, grants and notification attempts.
///
/// All methods are synchronous; async callers run them on a blocking thread.
pub trait Store: Send + Sync + fmt::Debug {
    /// Persist a new request (status Pending). Duplicate id → StoreError::Duplicate.
    fn create(&self, request: &ApprovalRequest) -> Result<(), StoreError>;
    /// A request by id.
    fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, StoreError>;
    /// Requests, newest first, optionally only those with `status`, at most `limit`.
    fn list(
        &self,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, StoreError>;
    /// The pending, unexpired (expires_at > now) request of this requester (issuer+subject) and route with this digest, if any (the newest).
    fn pending_for(
        &self,
        requester: &Requester,
        route: &str,
        digest: &str,
        now: u64,
    ) -> Result<Option<ApprovalRequest>, StoreError>;
    /// Decide a pending request, atomically (one transaction, IMMEDIATE): only if it is Pending and expires_at > now; sets status (Approved/Denied by decision.approved) and the decision; inserts every grant in `grants` (an approval makes an exact grant, and maybe a scoped one too). Returns the updated request. Already decided/expired → NotPending with the current status (a pending request past its expiry counts as "expired": mark it Expired in the same transaction and return NotPending{status:"expired"}). Unknown id → NotFound.
    fn decide(
        &self,
        id: &str,
        decision: &Decision,
        grants: &[Grant],
        now: u64,
    ) -> Result<ApprovalRequest, StoreError>;
    /// Use an exact grant, atomically: the unused, unexpired (expires_at > now) grant for this requester, route and digest; marks it used (used_at = now) so it passes once. None if there is none.
    fn use_grant(
        &self,
        requester: &Requester,
        route: &str,
        digest: &str,
        now: u64,
    ) -> Result<Option<Grant>, StoreError>;
    /// The unexpired scoped grants of this requester on this route (the caller matches their operation globs).
    fn scoped_grants(
        &self,
        requester: &Requester,
        route: &str,
        now: u64,
    ) -> Result<Vec<Grant>, StoreError>;
    /// All grants of a request (for display).
    fn grants_of(&self, request_id: &str) -> Result<Vec<Grant>, StoreError>;
    /// Mark every pending request with expires_at <= now Expired, and return them (as updated). Atomic.
    fn expire(&self, now: u64) -> Result<Vec<ApprovalRequest>, StoreError>;
    /// Append a webhook delivery attempt.
    fn record_notification(&self, notification: &Notification) -> Result<(), StoreError>;
    /// The delivery attempts for a request, in order.
    fn notifications(&self, request_id: &str) -> Result<Vec<Notification>, StoreError>;
}

/// The schema version this module writes and reads (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// Schema version 1.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    requester_issuer TEXT NOT NULL,
    requester_subject TEXT NOT NULL,
    route TEXT NOT NULL,
    digest TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_pending_for
    ON requests (requester_issuer, requester_subject, route, digest, status, expires_at);
CREATE INDEX IF NOT EXISTS requests_status_expires ON requests (status, expires_at);
CREATE INDEX IF NOT EXISTS requests_status_created ON requests (status, created_at);
CREATE INDEX IF NOT EXISTS requests_created ON requests (created_at);

CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY NOT NULL,
    request_id TEXT NOT NULL REFERENCES requests (id),
    requester_issuer TEXT NOT NULL,
    requester_subject TEXT NOT NULL,
    requester TEXT NOT NULL,
    route TEXT NOT NULL,
    digest TEXT,
    operation TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE INDEX IF NOT EXISTS grants_exact
    ON grants (requester_issuer, requester_subject, route, digest, expires_at);
CREATE INDEX IF NOT EXISTS grants_scoped
    ON grants (requester_issuer, requester_subject, route, expires_at)
    WHERE operation IS NOT NULL;
CREATE INDEX IF NOT EXISTS grants_request ON grants (request_id);

CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    target TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    status INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS notifications_request ON notifications (request_id, id);
";

/// The columns of `grants` that make a [`Grant`], in [`GrantRow::read`] order.
const GRANT_COLUMNS: &str =
    "id, request_id, requester, route, digest, operation, created_at, expires_at, used_at";

/// The embedded default [`Store`]: one SQLite file, in WAL mode, synchronous=FULL.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (or create) the store at `path`.
    ///
    /// Creates the parent directory if missing, and the file with mode 0600
    /// if new (it holds who asked for what). Refuses a database whose schema
    /// version is newer than this code knows.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(format!(
                    "open: cannot create directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        create_private_file(path)?;

        let conn = Connection::open(path).map_err(db("open"))?;
        conn.busy_timeout(Duration::from_millis(5000))
            .map_err(db("open: busy_timeout"))?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            .map_err(db("open: journal_mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db("open: synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db("open: foreign_keys"))?;

        let mut conn = conn;
        migrate(&mut conn)?;

        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, or a Database error if a panic poisoned the lock.
    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Database("connection lock poisoned by a panic".to_owned()))
    }
}

/// Create `path` with mode 0600 unless it exists.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(format!(
            "open: cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Bring the schema to [`SCHEMA_VERSION`], or refuse a newer one.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("open: begin schema transaction"))?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(db("open: read user_version"))?;
    match version {
        0 => {
            tx.execute_batch(SCHEMA_V1)
                .map_err(db("open: create schema"))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(db("open: set user_version"))?;
            tx.commit().map_err(db("open: commit schema"))
        }
        SCHEMA_VERSION => Ok(()),
        v if v > SCHEMA_VERSION => Err(StoreError::Database(format!(
            "open: database schema version {v} is newer than this gateway supports \
             ({SCHEMA_VERSION}); refusing to use it"
        ))),
        v => Err(StoreError::Database(format!(
            "open: unknown database schema version {v}"
        ))),
    }
}

/// Map a rusqlite error to a Database error naming the operation.
fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Database(format!("{op}: {e}"))
}

/// A time as stored: saturated at `i64::MAX`.
fn ms(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// A stored time back as `u64` (never negative as written).
fn from_ms(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

/// A limit as SQLite takes it.
fn limit_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Encode a value as JSON text.
fn encode<T: Serialize>(op: &'static str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| {
        StoreError::Database(format!("{op}: cannot encode record ({:?})", e.classify()))
    })
}

/// Decode JSON text; the error names where it failed, not what it held.
fn decode<T: serde::de::DeserializeOwned>(op: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Database(format!(
            "{op}: stored record is not valid ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Rewrite a request's status and record.
fn update_request(
    tx: &Transaction<'_>,
    op: &'static str,
    request: &ApprovalRequest,
) -> Result<(), StoreError> {
    let record = encode(op, request)?;
    tx.prepare_cached("UPDATE requests SET status = ?2, record = ?3 WHERE id = ?1")
        .and_then(|mut st| st.execute(params![request.id, request.status.as_str(), record]))
        .map_err(db(op))?;
    Ok(())
}

/// Insert one grant.
fn insert_grant(tx: &Transaction<'_>, grant: &Grant) -> Result<(), StoreError> {
    let requester = encode("decide: insert grant", &grant.requester)?;
    tx.prepare_cached(
        "INSERT INTO grants (id, request_id, requester_issuer, requester_subject, requester, \
         route, digest, operation, created_at, expires_at, used_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut st| {
        st.execute(params![
            grant.id,
            grant.request_id,
            grant.requester.issuer,
            grant.requester.subject,
            requester,
            grant.route,
            grant.digest,
            grant.operation,
            ms(grant.created_at),
            ms(grant.expires_at),
            grant.used_at.map(ms),
        ])
    })
    .map_err(db("decide: insert grant"))?;
    Ok(())
}

/// A `grants` row as read, before its requester JSON is decoded.
struct GrantRow {
    id: String,
    request_id: String,
    requester: String,
    route: String,
    digest: Option<String>,
    operation: Option<String>,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
}

impl GrantRow {
    /// Read the [`GRANT_COLUMNS`] of a row.
    fn read(row: &Row<'_>) -> rusqlite::Result<GrantRow> {
        Ok(GrantRow {
            id: row.get(0)?,
            request_id: row.get(1)?,
            requester: row.get(2)?,
            route: row.get(3)?,
            digest: row.get(4)?,
            operation: row.get(5)?,
            created_at: row.get(6)?,
            expires_at: row.get(7)?,
            used_at: row.get(8)?,
        })
    }

    /// The grant it holds.
    fn into_grant(self, op: &'static str) -> Result<Grant, StoreError> {
        Ok(Grant {
            requester: decode(op, &self.requester)?,
            id: self.id,
            request_id: self.request_id,
            route: self.route,
            digest: self.digest,
            operation: self.operation,
            created_at: from_ms(self.created_at),
            expires_at: from_ms(self.expires_at),
            used_at: self.used_at.map(from_ms),
        })
    }
}

/// Run a query whose rows are request records, and decode them.
fn query_requests(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<ApprovalRequest>, StoreError> {
    let mut st = conn.prepare_cached(sql).map_err(db(op))?;
    let records = st
        .query_map(params, |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
        .map_err(db(op))?;
    records.iter().map(|r| decode(op, r)).collect()
}

/// Run a query whose rows are [`GRANT_COLUMNS`], and decode them.
fn query_grants(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Grant>, StoreError> {
    let mut st = conn.prepare_cached(sql).map_err(db(op))?;
    let rows = st
        .query_map(params, GrantRow::read)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<GrantRow>>>())
        .map_err(db(op))?;
    rows.into_iter().map(|r| r.into_grant(op)).collect()
}

impl Store for SqliteStore {
    fn create(&self, request: &ApprovalRequest) -> Result<(), StoreError> {
        let record = encode("create", request)?;
        let conn = self.lock()?;
        let inserted = conn
            .prepare_cached(
                "INSERT INTO requests (id, created_at, expires_at, status, requester_issuer, \
                 requester_subject, route, digest, record) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
            )
            .and_then(|mut st| {
                st.execute(params![
                    request.id,
                    ms(request.created_at),
                    ms(request.expires_at),
                    request.status.as_str(),
                    request.requester.issuer,
                    request.requester.subject,
                    request.route,
                    request.digest,
                    record,
                ])
            })
            .map_err(db("create"))?;
        if inserted == 0 {
            return Err(StoreError::Duplicate(request.id.clone()));
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, StoreError> {
        let conn = self.lock()?;
        let record: Option<String> = conn
            .prepare_cached("SELECT record FROM requests WHERE id = ?1")
            .and_then(|mut st| st.query_row([id], |row| row.get(0)).optional())
            .map_err(db("get"))?;
        record.map(|r| decode("get", &r)).transpose()
    }

    fn list(
        &self,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        let conn = self.lock()?;
        match status {
            Some(status) => query_requests(
                &conn,
                "list",
                "SELECT record FROM requests WHERE status = ?1 \
                 ORDER BY created_at DESC, rowid DESC LIMIT ?2",
                params![status.as_str(), limit_of(limit)],
            ),
            None => query_requests(
                &conn,
                "list",
                "SELECT record FROM requests ORDER BY created_at DESC, rowid DESC LIMIT ?1",
                params![limit_of(limit)],
            ),
        }
    }

    fn pending_for(
        &self,
        requester: &Requester,
        route: &str,
        digest: &str,
        now: u64,
    ) -> Result<Option<ApprovalRequest>, StoreError> {
        let conn = self.lock()?;
        let found = query_requests(
            &conn,
            "pending_for",
            "SELECT record FROM requests \
             WHERE requester_issuer = ?1 AND requester_subject = ?2 AND route = ?3 \
             AND digest = ?4 AND status = 'pending' AND expires_at > ?5 \
             ORDER BY created_at DESC, rowid DESC LIMIT 1",
            params![requester.issuer, requester.subject, route, digest, ms(now)],
        )?;
        Ok(found.into_iter().next())
    }

    fn decide(
        &self,
        id: &str,
        decision: &Decision,
        grants: &[Grant],
        now: u64,
    ) -> Result<ApprovalRequest, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("decide: begin"))?;
        let record: Option<String> = tx
            .prepare_cached("SELECT record FROM requests WHERE id = ?1")
            .and_then(|mut st| st.query_row([id], |row| row.get(0)).optional())
            .map_err(db("decide: read request"))?;
        let Some(record) = record else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        let mut request: ApprovalRequest = decode("decide: read request", &record)?;
        if request.status != Status::Pending {
            return Err(StoreError::NotPending {
                id: id.to_owned(),
                status: request.status.as_str().to_owned(),
            });
        }
        if request.expires_at <= now {
            request.status = Status::Expired;
            update_request(&tx, "decide: mark expired", &request)?;
            tx.commit().map_err(db("decide: commit expiry"))?;
            return Err(StoreError::NotPending {
                id: id.to_owned(),
                status: Status::Expired.as_str().to_owned(),
            });
        }
        request.status = if decision.approved {
            Status::Approved
        } else {
            Status::Denied
        };
        request.decision = Some(decision.clone());
        update_request(&tx, "decide: update request", &request)?;
        for grant in grants {
            insert_grant(&tx, grant)?;
        }
        tx.commit().map_err(db("decide: commit"))?;
        Ok(request)
    }

    fn use_grant(
        &self,
        requester: &Requester,
        route: &str,
        digest: &str,
        now: u64,
    ) -> Result<Option<Grant>, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("use_grant: begin"))?;
        let row = tx
            .prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM grants \
                 WHERE requester_issuer = ?1 AND requester_subject = ?2 AND route = ?3 \
                 AND digest = ?4 AND used_at IS NULL AND expires_at > ?5 \
                 ORDER BY expires_at, rowid LIMIT 1"
            ))
            .and_then(|mut st| {
                st.query_row(
                    params![requester.issuer, requester.subject, route, digest, ms(now)],
                    GrantRow::read,
                )
                .optional()
            })
            .map_err(db("use_grant: find"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut grant = row.into_grant("use_grant: find")?;
        let marked = tx
            .prepare_cached("UPDATE grants SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL")
            .and_then(|mut st| st.execute(params![grant.id, ms(now)]))
            .map_err(db("use_grant: mark used"))?;
        if marked != 1 {
            // Cannot happen inside the IMMEDIATE transaction; refuse rather than pass twice.
            return Ok(None);
        }
        tx.commit().map_err(db("use_grant: commit"))?;
        grant.used_at = Some(now);
        Ok(Some(grant))
    }

    fn scoped_grants(
        &self,
        requester: &Requester,
        route: &str,
        now: u64,
    ) -> Result<Vec<Grant>, StoreError> {
        let conn = self.lock()?;
        query_grants(
            &conn,
            "scoped_grants",
            &format!(
                "SELECT {GRANT_COLUMNS} FROM grants \
                 WHERE requester_issuer = ?1 AND requester_subject = ?2 AND route = ?3 \
                 AND operation IS NOT NULL AND expires_at > ?4 \
                 ORDER BY created_at, rowid"
            ),
            params![requester.issuer, requester.subject, route, ms(now)],
        )
    }

    fn grants_of(&self, request_id: &str) -> Result<Vec<Grant>, StoreError> {
        let conn = self.lock()?;
        query_grants(
            &conn,
            "grants_of",
            &format!(
                "SELECT {GRANT_COLUMNS} FROM grants WHERE request_id = ?1 \
                 ORDER BY created_at, rowid"
            ),
            [request_id],
        )
    }

    fn expire(&self, now: u64) -> Result<Vec<ApprovalRequest>, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("expire: begin"))?;
        let mut due = query_requests(
            &tx,
            "expire: find",
            "SELECT record FROM requests WHERE status = 'pending' AND expires_at <= ?1 \
             ORDER BY created_at, rowid",
            [ms(now)],
        )?;
        for request in &mut due {
            request.status = Status::Expired;
            update_request(&tx, "expire: update", request)?;
        }
        tx.commit().map_err(db("expire: commit"))?;
        Ok(due)
    }

    fn record_notification(&self, notification: &Notification) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.prepare_cached(
            "INSERT INTO notifications (request_id, target, attempt, at, ok, status, error) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut st| {
            st.execute(params![
                notification.request_id,
                notification.target,
                notification.attempt,
                ms(notification.at),
                notification.ok,
                notification.status,
                notification.error,
            ])
        })
        .map_err(db("record_notification"))?;
        Ok(())
    }

    fn notifications(&self, request_id: &str) -> Result<Vec<Notification>, StoreError> {
        let conn = self.lock()?;
        let mut st = conn
            .prepare_cached(
                "SELECT request_id, target, attempt, at, ok, status, error \
                 FROM notifications WHERE request_id = ?1 ORDER BY id",
            )
            .map_err(db("notifications"))?;
        st.query_map([request_id], |row| {
            Ok(Notification {
                request_id: row.get(0)?,
                target: row.get(1)?,
                attempt: row.get(2)?,
                at: from_ms(row.get(3)?),
                ok: row.get(4)?,
                status: row.get(5)?,
                error: row.get(6)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(db("notifications"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn requester(issuer: &str, subject: &str) -> Requester {
        Requester {
            subject: subject.to_owned(),
            issuer: issuer.to_owned(),
            tenant: Some("acme".to_owned()),
            app_id: Some("cli".to_owned()),
        }
    }

    fn alice() -> Requester {
        requester("https://idp.example", "alice")
    }

    fn request(id: &str, created_at: u64, expires_at: u64) -> ApprovalRequest {
        ApprovalRequest {
            id: id.to_owned(),
            created_at,
            expires_at,
            status: Status::Pending,
            requester: alice(),
            route: "billing".to_owned(),
            operation: "DELETE /invoices/{id}".to_owned(),
            plugin: "jit".to_owned(),
            summary: "delete invoice 42".to_owned(),
            request: serde_json::json!({
                "method": "DELETE",
                "url": "https://billing.internal/invoices/42?token=***",
                "headers": {"content-type": "application/json"},
                "body": {"size": 17, "sha256": "ab".repeat(32)},
                "ratio": 0.1,
                "nested": [1, -2, 3.5, null, true, "x"],
            }),
            digest: "d1".to_owned(),
            approver_groups: vec!["finance-leads".to_owned(), "sre".to_owned()],
            decision: None,
        }
    }

    fn decision(approved: bool, at: u64, scope: Option<Scope>) -> Decision {
        Decision {
            by: Approver {
                subject: "bob".to_owned(),
                issuer: "https://idp.example".to_owned(),
                name: Some("Bob".to_owned()),
            },
            at,
            approved,
            reason: "ticket OPS-7".to_owned(),
            scope,
        }
    }

    fn exact_grant(id: &str, request: &ApprovalRequest, expires_at: u64) -> Grant {
        Grant {
            id: id.to_owned(),
            request_id: request.id.clone(),
            requester: request.requester.clone(),
            route: request.route.clone(),
            digest: Some(request.digest.clone()),
            operation: None,
            created_at: request.created_at + 1,
            expires_at,
            used_at: None,
        }
    }

    fn scoped_grant(id: &str, request: &ApprovalRequest, glob: &str, expires_at: u64) -> Grant {
        Grant {
            id: id.to_owned(),
            request_id: request.id.clone(),
            requester: request.requester.clone(),
            route: request.route.clone(),
            digest: None,
            operation: Some(glob.to_owned()),
            created_at: request.created_at + 1,
            expires_at,
            used_at: None,
        }
    }

    fn open_temp() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("approvals.db")).unwrap();
        (dir, store)
    }

    /// Create a request and approve it with the given grants.
    fn approved(store: &SqliteStore, req: &ApprovalRequest, grants: &[Grant]) {
        store.create(req).unwrap();
        store
            .decide(
                &req.id,
                &decision(true, req.created_at + 1, None),
                grants,
                req.created_at + 1,
            )
            .unwrap();
    }

    #[test]
    fn round_trip_every_field() {
        let (_dir, store) = open_temp();
        let mut req = request("r1", 1_000, 61_000);
        req.status = Status::Approved;
        req.requester.tenant = None;
        req.decision = Some(decision(
            true,
            1_500,
            Some(Scope {
                operation: "DELETE /invoices/*".to_owned(),
                until: 3_601_000,
            }),
        ));
        store.create(&req).unwrap();
        assert_eq!(store.get("r1").unwrap(), Some(req.clone()));
        assert_eq!(store.get("nope").unwrap(), None);

        // Times beyond i64::MAX round-trip exactly in the record.
        let mut far = request("r2", u64::MAX - 1, u64::MAX);
        far.decision = None;
        store.create(&far).unwrap();
        assert_eq!(store.get("r2").unwrap(), Some(far.clone()));
        // ...and still count as unexpired.
        assert_eq!(
            store
                .pending_for(&far.requester, &far.route, &far.digest, 5)
                .unwrap(),
            Some(far)
        );
    }

    #[test]
    fn duplicate_id_refused() {
        let (_dir, store) = open_temp();
        let first = request("r1", 1_000, 61_000);
        store.create(&first).unwrap();
        let mut second = request("r1", 2_000, 62_000);
        second.summary = "something else".to_owned();
        match store.create(&second) {
            Err(StoreError::Duplicate(id)) => assert_eq!(id, "r1"),
            other => panic!("expected Duplicate, got {other:?}"),
        }
        assert_eq!(store.get("r1").unwrap(), Some(first));
    }

    #[test]
    fn list_by_status_newest_first_with_limit() {
        let (_dir, store) = open_temp();
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let t = 1_000 * (i as u64 + 1);
            store.create(&request(id, t, t + 60_000)).unwrap();
        }
        store
            .decide("b", &decision(false, 2_500, None), &[], 2_500)
            .unwrap();
        store
            .decide("d", &decision(false, 4_500, None), &[], 4_500)
            .unwrap();

        let ids = |v: Vec<ApprovalRequest>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list(None, 100).unwrap()),
            ["e", "d", "c", "b", "a"]
        );
        assert_eq!(ids(store.list(None, 2).unwrap()), ["e", "d"]);
        assert_eq!(
            ids(store.list(Some(Status::Pending), 100).unwrap()),
            ["e", "c", "a"]
        );
        assert_eq!(
            ids(store.list(Some(Status::Pending), 2).unwrap()),
            ["e", "c"]
        );
        assert_eq!(
            ids(store.list(Some(Status::Denied), 10).unwrap()),
            ["d", "b"]
        );
        assert!(store.list(Some(Status::Approved), 10).unwrap().is_empty());
        assert!(store.list(None, 0).unwrap().is_empty());
        let denied = store.list(Some(Status::Denied), 1).unwrap();
        assert_eq!(denied[0].status, Status::Denied);
        assert!(denied[0].decision.is_some());
    }

    #[test]
    fn pending_for_matches_requester_route_digest_unexpired() {
        let (_dir, store) = open_temp();
        let older = request("old", 1_000, 60_000);
        let newer = request("new", 2_000, 60_000);
        store.create(&older).unwrap();
        store.create(&newer).unwrap();
        let me = alice();

        // The newest of the matching ones.
        assert_eq!(
            store.pending_for(&me, "billing", "d1", 5_000).unwrap(),
            Some(newer.clone())
        );
        // Tenant and app id do not matter.
        let mut elsewhere = me.clone();
        elsewhere.tenant = None;
        elsewhere.app_id = Some("web".to_owned());
        assert_eq!(
            store
                .pending_for(&elsewhere, "billing", "d1", 5_000)
                .unwrap()
                .map(|r| r.id),
            Some("new".to_owned())
        );
        // Other issuer, subject, route or digest: nothing.
        let other_issuer = requester("https://evil.example", "alice");
        let other_subject = requester("https://idp.example", "mallory");
        assert_eq!(
            store
                .pending_for(&other_issuer, "billing", "d1", 5_000)
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .pending_for(&other_subject, "billing", "d1", 5_000)
                .unwrap(),
            None
        );
        assert_eq!(
            store.pending_for(&me, "payroll", "d1", 5_000).unwrap(),
            None
        );
        assert_eq!(
            store.pending_for(&me, "billing", "d2", 5_000).unwrap(),
            None
        );
        // Expired: nothing (expires_at > now is required).
        assert_eq!(
            store.pending_for(&me, "billing", "d1", 60_000).unwrap(),
            None
        );
        // Decided: no longer pending; the older one is found instead.
        store
            .decide("new", &decision(false, 6_000, None), &[], 6_000)
            .unwrap();
        assert_eq!(
            store.pending_for(&me, "billing", "d1", 7_000).unwrap(),
            Some(older)
        );
    }

    #[test]
    fn decide_approve_inserts_grants_and_decides_once() {
        let (_dir, store) = open_temp();
        let req = request("r1", 1_000, 61_000);
        store.create(&req).unwrap();
        let scope = Scope {
            operation: "DELETE /invoices/*".to_owned(),
            until: 3_600_000,
        };
        let d = decision(true, 2_000, Some(scope));
        let grants = [
            exact_grant("g-exact", &req, 300_000),
            scoped_grant("g-scope", &req, "DELETE /invoices/*", 3_600_000),
        ];
        let decided = store.decide("r1", &d, &grants, 2_000).unwrap();
        assert_eq!(decided.status, Status::Approved);
        assert_eq!(decided.decision, Some(d.clone()));
        assert_eq!(store.get("r1").unwrap(), Some(decided));
        assert_eq!(store.grants_of("r1").unwrap(), grants.to_vec());

        // A second decision is refused and changes nothing.
        let second = decision(false, 3_000, None);
        match store.decide("r1", &second, &[exact_grant("g2", &req, 300_000)], 3_000) {
            Err(StoreError::NotPending { id, status }) => {
                assert_eq!(id, "r1");
                assert_eq!(status, "approved");
            }
            other => panic!("expected NotPending, got {other:?}"),
        }
        let stored = store.get("r1").unwrap().unwrap();
        assert_eq!(stored.status, Status::Approved);
        assert_eq!(stored.decision, Some(d));
        assert_eq!(store.grants_of("r1").unwrap().len(), 2);

        match store.decide("ghost", &second, &[], 3_000) {
            Err(StoreError::NotFound(id)) => assert_eq!(id, "ghost"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn decide_is_atomic_when_a_grant_fails() {
        let (_dir, store) = open_temp();
        let req = request("r1", 1_000, 61_000);
        store.create(&req).unwrap();
        // Two grants with the same id: the second insert fails, so nothing happens.
        let grants = [
            exact_grant("g", &req, 300_000),
            exact_grant("g", &req, 300_000),
        ];
        let err = store
            .decide("r1", &decision(true, 2_000, None), &grants, 2_000)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Database(ref m) if m.contains("decide")),
            "{err}"
        );
        assert_eq!(store.get("r1").unwrap(), Some(req));
        assert!(store.grants_of("r1").unwrap().is_empty());
    }

    #[test]
    fn decide_after_expiry_marks_expired() {
        let (_dir, store) = open_temp();
        let req = request("r1", 1_000, 61_000);
        store.create(&req).unwrap();
        let grants = [exact_grant("g", &req, 300_000)];
        match store.decide("r1", &decision(true, 61_000, None), &grants, 61_000) {
            Err(StoreError::NotPending { id, status }) => {
                assert_eq!(id, "r1");
                assert_eq!(status, "expired");
            }
            other => panic!("expected NotPending, got {other:?}"),
        }
        let stored = store.get("r1").unwrap().unwrap();
        assert_eq!(stored.status, Status::Expired);
        assert_eq!(stored.decision, None);
        assert!(store.grants_of("r1").unwrap().is_empty());
        assert_eq!(store.list(Some(Status::Expired), 10).unwrap(), vec![stored]);
        // Still expired on a later try.
        match store.decide("r1", &decision(true, 70_000, None), &grants, 70_000) {
            Err(StoreError::NotPending { status, .. }) => assert_eq!(status, "expired"),
            other => panic!("expected NotPending, got {other:?}"),
        }
    }

    #[test]
    fn deny_stores_reason() {
        let (_dir, store) = open_temp();
        store.create(&request("r1", 1_000, 61_000)).unwrap();
        let mut d = decision(false, 2_000, None);
        d.reason = "not during the freeze".to_owned();
        let decided = store.decide("r1", &d, &[], 2_000).unwrap();
        assert_eq!(decided.status, Status::Denied);
        let stored = store.get("r1").unwrap().unwrap();
        assert_eq!(stored.status, Status::Denied);
        let stored_decision = stored.decision.unwrap();
        assert!(!stored_decision.approved);
        assert_eq!(stored_decision.reason, "not during the freeze");
        assert!(store.grants_of("r1").unwrap().is_empty());
    }

    #[test]
    fn use_grant_passes_exactly_once() {
        let (_dir, store) = open_temp();
        let req = request("r1", 1_000, 61_000);
        approved(&store, &req, &[exact_grant("g", &req, 300_000)]);
        let me = alice();

        // Not for another digest, route, subject, or the same subject from another issuer.
        assert_eq!(store.use_grant(&me, "billing", "d2", 5_000).unwrap(), None);
        assert_eq!(store.use_grant(&me, "payroll", "d1", 5_000).unwrap(), None);
        let mallory = requester("https://idp.example", "mallory");
        assert_eq!(
            store.use_grant(&mallory, "billing", "d1", 5_000).unwrap(),
            None
        );
        let impostor = requester("https://evil.example", "alice");
        assert_eq!(
            store.use_grant(&impostor, "billing", "d1", 5_000).unwrap(),
            None
        );

        let used = store
            .use_grant(&me, "billing", "d1", 5_000)
            .unwrap()
            .unwrap();
        assert_eq!(used.id, "g");
        assert_eq!(used.used_at, Some(5_000));
        assert_eq!(store.use_grant(&me, "billing", "d1", 5_001).unwrap(), None);
        assert_eq!(store.grants_of("r1").unwrap(), vec![used]);
    }

    #[test]
    fn use_grant_not_after_expiry_nor_for_scoped() {
        let (_dir, store) = open_temp();
        let req = request("r1", 1_000, 61_000);
        approved(
            &store,
            &req,
            &[
                exact_grant("g", &req, 300_000),
                scoped_grant("s", &req, "*", 900_000),
            ],
        );
        let me = alice();
        assert_eq!(
            store.use_grant(&me, "billing", "d1", 300_000).unwrap(),
            None
        );
        assert_eq!(
            store.use_grant(&me, "billing", "d1", 400_000).unwrap(),
            None
        );
        // Neither was consumed.
        assert!(
            store
                .grants_of("r1")
                .unwrap()
                .iter()
                .all(|g| g.used_at.is_none())
        );
        assert_eq!(
            store
                .use_grant(&me, "billing", "d1", 299_999)
                .unwrap()
                .map(|g| g.id),
            Some("g".to_owned())
        );
    }

    #[test]
    fn scoped_grants_filter_and_are_not_consumed() {
        let (_dir, store) = open_temp();
        let req = request("r1", 1_000, 61_000);
        let mut other_route = request("r2", 1_100, 61_000);
        other_route.route = "payroll".to_owned();
        let mut other_issuer = request("r3", 1_200, 61_000);
        other_issuer.requester = requester("https://evil.example", "alice");
        let later = request("r4", 1_300, 61_000);

        approved(
            &store,
            &req,
            &[
                exact_grant("g1", &req, 900_000),
                scoped_grant("s1", &req, "DELETE /invoices/*", 900_000),
                scoped_grant("s-short", &req, "GET *", 10_000),
            ],
        );
        approved(
            &store,
            &other_route,
            &[scoped_grant("s2", &other_route, "*", 900_000)],
        );
        approved(
            &store,
            &other_issuer,
            &[scoped_grant("s3", &other_issuer, "*", 900_000)],
        );
        approved(
            &store,
            &later,
            &[scoped_grant("s4", &later, "POST *", 800_000)],
        );

        let me = alice();
        let ids = |v: Vec<Grant>| v.into_iter().map(|g| g.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.scoped_grants(&me, "billing", 5_000).unwrap()),
            ["s1", "s-short", "s4"]
        );
        // Not consumed: the same again.
        let again = store.scoped_grants(&me, "billing", 5_000).unwrap();
        assert_eq!(ids(again.clone()), ["s1", "s-short", "s4"]);
        assert!(
            again
                .iter()
                .all(|g| g.used_at.is_none() && g.digest.is_none())
        );
        assert_eq!(again[0].operation.as_deref(), Some("DELETE /invoices/*"));
        // Expired ones drop out.
        assert_eq!(
            ids(store.scoped_grants(&me, "billing", 10_000).unwrap()),
            ["s1", "s4"]
        );
        assert_eq!(
            ids(store.scoped_grants(&me, "billing", 850_000).unwrap()),
            ["s1"]
        );
        assert!(
            store
                .scoped_grants(&me, "billing", 900_000)
                .unwrap()
                .is_empty()
        );
        // Other route and other issuer are their own.
        assert_eq!(
            ids(store.scoped_grants(&me, "payroll", 5_000).unwrap()),
            ["s2"]
        );
        assert_eq!(
            ids(store
                .scoped_grants(&other_issuer.requester, "billing", 5_000)
                .unwrap()),
            ["s3"]
        );
        assert!(
            store
                .scoped_grants(
                    &requester("https://idp.example", "mallory"),
                    "billing",
                    5_000
                )
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn expire_marks_only_due_pending_requests() {
        let (_dir, store) = open_temp();
        store.create(&request("due1", 1_000, 10_000)).unwrap();
        store.create(&request("due2", 2_000, 20_000)).unwrap();
        store.create(&request("later", 3_000, 30_001)).unwrap();
        store.create(&request("decided", 4_000, 5_000)).unwrap();
        store
            .decide("decided", &decision(false, 4_500, None), &[], 4_500)
            .unwrap();

        let expired = store.expire(30_000).unwrap();
        assert_eq!(
            expired.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["due1", "due2"]
        );
        assert!(expired.iter().all(|r| r.status == Status::Expired));
        assert_eq!(store.get("due1").unwrap().as_ref(), Some(&expired[0]));
        assert_eq!(store.get("due2").unwrap().as_ref(), Some(&expired[1]));
        assert_eq!(store.get("later").unwrap().unwrap().status, Status::Pending);
        assert_eq!(
            store.get("decided").unwrap().unwrap().status,
            Status::Denied
        );
        // Nothing twice.
        assert!(store.expire(30_000).unwrap().is_empty());
        assert_eq!(store.expire(30_001).unwrap()[0].id, "later");
    }

    #[test]
    fn notifications_round_trip_in_order() {
        let (_dir, store) = open_temp();
        let attempts = [
            Notification {
                request_id: "r1".to_owned(),
                target: "slack".to_owned(),
                attempt: 1,
                at: 2_000,
                ok: false,
                status: Some(503),
                error: Some("service unavailable".to_owned()),
            },
            Notification {
                request_id: "r1".to_owned(),
                target: "slack".to_owned(),
                attempt: 2,
                at: 1_500, // out of time order: insertion order wins
                ok: false,
                status: None,
                error: Some("connection refused".to_owned()),
            },
            Notification {
                request_id: "r1".to_owned(),
                target: "https://hooks.example/x".to_owned(),
                attempt: 3,
                at: 8_000,
                ok: true,
                status: Some(200),
                error: None,
            },
        ];
        let other = Notification {
            request_id: "r2".to_owned(),
            ..attempts[2].clone()
        };
        store.record_notification(&attempts[0]).unwrap();
        store.record_notification(&other).unwrap();
        store.record_notification(&attempts[1]).unwrap();
        store.record_notification(&attempts[2]).unwrap();
        assert_eq!(store.notifications("r1").unwrap(), attempts.to_vec());
        assert_eq!(store.notifications("r2").unwrap(), vec![other]);
        assert!(store.notifications("r3").unwrap().is_empty());
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join("nested")
            .join("deeper")
            .join("approvals.db");
        let req = request("r1", 1_000, 61_000);
        let pending = request("r2", 2_000, 62_000);
        let grants = [
            exact_grant("g", &req, 300_000),
            scoped_grant("s", &req, "*", 300_000),
        ];
        let note = Notification {
            request_id: "r1".to_owned(),
            target: "slack".to_owned(),
            attempt: 1,
            at: 1_100,
            ok: true,
            status: Some(204),
            error: None,
        };
        let decided = {
            let store = SqliteStore::open(&path).unwrap();
            store.create(&req).unwrap();
            store.create(&pending).unwrap();
            store.record_notification(&note).unwrap();
            store
                .decide("r1", &decision(true, 2_000, None), &grants, 2_000)
                .unwrap()
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get("r1").unwrap(), Some(decided));
        assert_eq!(store.get("r2").unwrap(), Some(pending));
        assert_eq!(store.grants_of("r1").unwrap(), grants.to_vec());
        assert_eq!(store.notifications("r1").unwrap(), vec![note]);
        assert!(
            store
                .use_grant(&alice(), "billing", "d1", 3_000)
                .unwrap()
                .is_some()
        );
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert!(
            store
                .use_grant(&alice(), "billing", "d1", 3_000)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approvals.db");
        let store = SqliteStore::open(&path).unwrap();
        store.create(&request("r1", 1_000, 61_000)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        // SQLite gives its WAL and shared-memory files the database's mode.
        for suffix in ["-wal", "-shm"] {
            let side = dir.path().join(format!("approvals.db{suffix}"));
            assert!(side.exists(), "{suffix} missing while the store is open");
            assert_eq!(mode(&side), 0o600, "{suffix}");
        }
    }

    #[test]
    fn wal_and_full_sync_and_foreign_keys() {
        let (_dir, store) = open_temp();
        let conn = store.lock().unwrap();
        let journal: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(sync, 2); // FULL
        assert_eq!(fk, 1);
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn grant_for_unknown_request_is_refused() {
        let (_dir, store) = open_temp();
        let req = request("r1", 1_000, 61_000);
        store.create(&req).unwrap();
        let mut stray = exact_grant("g", &req, 300_000);
        stray.request_id = "ghost".to_owned();
        assert!(matches!(
            store.decide("r1", &decision(true, 2_000, None), &[stray], 2_000),
            Err(StoreError::Database(_))
        ));
        assert_eq!(store.get("r1").unwrap().unwrap().status, Status::Pending);
    }

    #[test]
    fn newer_schema_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approvals.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = SqliteStore::open(&path).unwrap_err();
        match &err {
            StoreError::Database(m) => assert!(m.contains("99"), "{m}"),
            other => panic!("expected Database, got {other:?}"),
        }
        assert!(err.to_string().contains("newer"), "{err}");
        // Not downgraded.
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 99);
    }

    #[test]
    fn concurrent_use_grant_passes_once() {
        let (_dir, store) = open_temp();
        let req = request("r1", 1_000, 61_000);
        approved(&store, &req, &[exact_grant("g", &req, 300_000)]);
        let store: Arc<dyn Store> = Arc::new(store);
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    store.use_grant(&alice(), "billing", "d1", 5_000).unwrap()
                })
            })
            .collect();
        let passed: Vec<Grant> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(passed.len(), 1);
        assert_eq!(passed[0].id, "g");
    }

    #[test]
    fn concurrent_use_grant_across_connections_passes_once() {
        const GRANTS: usize = 60;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approvals.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            let req = request("r1", 1_000, 61_000);
            let grants: Vec<Grant> = (0..GRANTS)
                .map(|i| {
                    let mut g = exact_grant(&format!("g{i}"), &req, 300_000);
                    g.digest = Some(format!("d{i}"));
                    g
                })
                .collect();
            approved(&store, &req, &grants);
        }
        // Each thread its own connection, as replicas sharing one file would have; every
        // thread races for every grant.
        let stores: Vec<SqliteStore> = (0..8).map(|_| SqliteStore::open(&path).unwrap()).collect();
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = stores
            .into_iter()
            .map(|store| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..GRANTS)
                        .filter_map(|i| {
                            store
                                .use_grant(&alice(), "billing", &format!("d{i}"), 5_000)
                                .unwrap()
                        })
                        .map(|g| g.id)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut passed: Vec<String> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        passed.sort();
        let mut expected: Vec<String> = (0..GRANTS).map(|i| format!("g{i}")).collect();
        expected.sort();
        assert_eq!(passed, expected);
    }

    #[test]
    fn concurrent_decide_decides_once() {
        let (_dir, store) = open_temp();
        let req = request("r1", 1_000, 61_000);
        store.create(&req).unwrap();
        let store = Arc::new(store);
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8u64)
            .map(|i| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                let grant = exact_grant(&format!("g{i}"), &req, 300_000);
                std::thread::spawn(move || {
                    barrier.wait();
                    store.decide(
                        "r1",
                        &decision(i % 2 == 0, 2_000 + i, None),
                        &[grant],
                        2_000,
                    )
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| matches!(e, StoreError::NotPending { .. }))
        );
        assert_eq!(store.grants_of("r1").unwrap().len(), 1);
    }

    #[test]
    fn poisoned_lock_is_an_error_not_a_panic() {
        let (_dir, store) = open_temp();
        let store = Arc::new(store);
        let poisoner = Arc::clone(&store);
        let joined = std::thread::spawn(move || {
            let _guard = poisoner.conn.lock().unwrap();
            panic!("poison the connection lock");
        })
        .join();
        assert!(joined.is_err());
        assert!(matches!(store.get("r1"), Err(StoreError::Database(m)) if m.contains("poisoned")));
        assert!(matches!(store.expire(1), Err(StoreError::Database(_))));
    }

    #[test]
    fn debug_shows_only_the_path_and_store_is_object_safe() {
        let (dir, store) = open_temp();
        store.create(&request("secret-id", 1_000, 61_000)).unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let shown = format!("{store:?}");
        assert!(shown.contains("SqliteStore"), "{shown}");
        assert!(
            shown.contains(&dir.path().join("approvals.db").display().to_string()),
            "{shown}"
        );
        assert!(!shown.contains("secret-id"), "{shown}");
    }

    #[test]
    fn status_names() {
        for status in [
            Status::Pending,
            Status::Approved,
            Status::Denied,
            Status::Expired,
        ] {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::String(status.as_str().to_owned())
            );
        }
        assert_eq!(Status::Pending.as_str(), "pending");
        assert_eq!(
            "Pending".parse::<Status>(),
            Err(UnknownStatus("Pending".to_owned()))
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            StoreError::NotPending {
                id: "r1".to_owned(),
                status: "expired".to_owned()
            }
            .to_string(),
            "approval request r1 is expired, not pending"
        );
        assert_eq!(
            StoreError::Duplicate("r1".to_owned()).to_string(),
            "approval request r1 exists already"
        );
        assert_eq!(
            StoreError::NotFound("r1".to_owned()).to_string(),
            "no approval request r1"
        );
    }
}
