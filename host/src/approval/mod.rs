//! Just-in-time approvals: a request a plugin holds is parked here until an approver decides,
//! its hold budget runs out or the gateway stops; an approval becomes a grant that lets the
//! identical request (or, when the approver chose, a scope of operations) through.
//!
//! The order of a held request: an exact grant for the same requester and request digest is
//! used once; else a scoped grant whose operation pattern matches lets it pass; else the
//! pending request of the same requester and digest is joined, or a new one is created
//! (audited, persisted, announced to the webhooks); then the request waits within its budget.
//! Every step is written to the audit log, fsync'ed, before it takes effect for the client.
pub mod api;
mod notify;
mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, watch};

pub use self::notify::{Attempt, Notice, Notifier, payload};
pub use self::store::{
    ApprovalRequest, Approver, Decision, Grant, Notification, Requester, Scope, SqliteStore,
    Status, Store, StoreError,
};
use crate::audit::Audit;
use crate::config::{ApprovalsConfig, Config};
use crate::error::GatewayError;
use crate::plugin::Principal;

/// How often waiting requests look at the store even when not woken: a decision taken by
/// another replica sharing the store reaches them within this.
const POLL: Duration = Duration::from_secs(2);

/// How often pending requests past their expiry are expired (and audited).
const SWEEP: Duration = Duration::from_secs(1);

/// Headers that change between two sends of the same request (the host the client addressed:
/// the route is bound instead), or that carry the caller's own
/// credential: left out of the request digest.
const VOLATILE_HEADERS: [&str; 24] = [
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "date",
    "x-ms-date",
    "x-ms-client-request-id",
    "x-ms-return-client-request-id",
    "x-ms-useragent",
    "user-agent",
    "traceparent",
    "tracestate",
    "request-id",
    "x-request-id",
    "content-length",
    "accept",
    "accept-encoding",
    "accept-language",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "via",
    "expect",
];

/// Headers whose values approvers see; every other bound header is shown by name only.
const SHOWN_HEADERS: [&str; 14] = [
    "content-type",
    "content-encoding",
    "content-language",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "range",
    "x-ms-version",
    "x-ms-blob-type",
    "x-ms-access-tier",
    "x-ms-delete-snapshots",
    "x-ms-lease-action",
    "x-ms-range",
];

/// The approval workflow: store, notifications, parked requests. Kept across reloads.
pub struct Approvals {
    store: Arc<dyn Store>,
    notifier: Arc<Notifier>,
    settings: ApprovalsConfig,
    /// Index of the identity provider that vouches for approvers.
    provider: usize,
    /// The approval page, for links in notifications.
    page: String,
    audit: Option<Arc<Audit>>,
    /// Bumped at every decision and expiry: parked requests look at the store again.
    changed: watch::Sender<u64>,
    /// Set when the gateway stops: parked requests are answered with their approval id.
    closing: watch::Sender<bool>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("store", &self.store)
            .field("notifier", &self.notifier)
            .finish_non_exhaustive()
    }
}

/// A request a plugin asked a human to approve, as the request path knows it.
#[derive(Debug)]
pub struct Ask<'a> {
    /// The gateway's request id.
    pub request_id: &'a str,
    /// The route's name.
    pub route: &'a str,
    /// The normalized operation.
    pub operation: &'a str,
    /// The plugin that asked.
    pub plugin: &'a str,
    /// The verified caller; none on a route open without authentication.
    pub principal: Option<&'a Principal>,
    /// The plugin's summary for approvers (no secrets, by contract).
    pub summary: &'a str,
    /// Any member of any of these groups may approve.
    pub approver_groups: &'a [String],
    /// How long to hold the request: the plugin's budget capped by the route's.
    pub hold: Duration,
    /// Method, URL (`scheme://authority/path?query`), headers and body as they will be
    /// forwarded (the client's credential already removed).
    pub method: &'a str,
    /// The URL the client addressed (shown to approvers; the digest binds its path and query,
    /// which with the route decide what the upstream receives).
    pub url: &'a str,
    /// The path and query.
    pub path_and_query: &'a str,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

/// What became of a held request.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// Approved (now, or earlier with a grant still valid): forward it.
    Granted {
        /// The approval request whose grant was used.
        approval: String,
        /// The grant.
        grant: String,
        /// Whether a scoped grant let it through (else an exact, single-use one).
        scoped: bool,
    },
    /// An approver refused it.
    Denied {
        /// The approval request.
        approval: String,
        /// The approver's reason.
        reason: String,
    },
    /// No decision within the hold budget (or the gateway is stopping): retry with the id.
    Pending {
        /// The approval request.
        approval: String,
        /// When the approval request expires (ms since the epoch).
        expires_at: u64,
    },
    /// The approval request expired without a decision.
    Expired {
        /// The approval request.
        approval: String,
    },
    /// Approved, but the single-use grant was taken by an identical request first.
    Used {
        /// The approval request.
        approval: String,
    },
}

/// An approver's answer to a request.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// The reason (required to deny).
    #[serde(default)]
    pub reason: String,
    /// With an approval: also let the requester run operations matching a pattern for a while.
    #[serde(default)]
    pub scope: Option<ScopeAsk>,
}

/// A scope an approver grants: operations matching `operation` (a glob, `*` and `?`) on the
/// same route, by the same requester, for `window`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeAsk {
    /// The operation pattern, e.g. `Microsoft.Compute/virtualMachines/*`.
    pub operation: String,
    /// How long, e.g. `30m`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// Why an approver's decision was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No such request, decided or expired already, or the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The approver asked for this request themselves.
    #[error("the requester of {0} cannot decide it (separation of duties)")]
    SelfApproval(String),
    /// The approver is in none of the request's approver groups.
    #[error("you are in none of the approver groups of {id} ({groups})")]
    NotAnApprover {
        /// The request.
        id: String,
        /// Its groups.
        groups: String,
    },
    /// The verdict itself is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The audit log failed (nothing was decided, or the decision is not on record), or the
    /// store's task died.
    #[error("{0}")]
    Unavailable(String),
}

impl Approvals {
    /// Open the store and the webhooks of `settings`; start expiring stale requests.
    /// `admin` is the admin listener's bound address (for links, unless `public_url` is set).
    pub fn open(
        config: &Config,
        settings: &ApprovalsConfig,
        admin: Option<std::net::SocketAddr>,
        audit: Option<Arc<Audit>>,
    ) -> Result<Arc<Approvals>, String> {
        let provider = config
            .identity_providers
            .iter()
            .position(|p| p.name == settings.identity_provider)
            .ok_or_else(|| {
                format!(
                    "approvals.identity_provider: no identity provider {:?}",
                    settings.identity_provider
                )
            })?;
        let store = SqliteStore::open(&config.path(&settings.store)).map_err(|e| e.to_string())?;
        let notifier = Notifier::new(&settings.webhooks, &config.base_dir)?;
        let base = match (&settings.public_url, admin) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(addr)) => format!("http://{addr}"),
            (None, None) => return Err("approvals need server.admin_listen".into()),
        };
        let approvals = Arc::new(Approvals {
            store: Arc::new(store),
            notifier: Arc::new(notifier),
            settings: settings.clone(),
            provider,
            page: format!("{base}/approvals"),
            audit,
            changed: watch::channel(0).0,
            closing: watch::channel(false).0,
        });
        tokio::spawn(sweep(Arc::downgrade(&approvals)));
        let resuming = approvals.clone();
        tokio::spawn(async move {
            match resuming.resume().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    announcements = n,
                    "approvals: announcements resumed after a restart"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "approvals: announcements could not be resumed")
                }
            }
        });
        Ok(approvals)
    }

    /// The identity provider whose tokens approvers present.
    pub fn provider(&self) -> usize {
        self.provider
    }

    /// `Retry-After` for a request whose hold budget ran out.
    pub fn retry_after(&self) -> Duration {
        self.settings.retry_after
    }

    /// Answer every parked request with its approval id (the gateway is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Decide what becomes of a request a plugin holds: use a grant, or park it (creating or
    /// joining its approval request) until a decision, its budget or the gateway's stop.
    pub async fn hold(&self, ask: Ask<'_>) -> Result<Held, GatewayError> {
        let requester = requester(ask.principal);
        let digest = digest(ask.method, ask.path_and_query, ask.headers, ask.body);
        let now = now_ms();
        let (route, operation) = (ask.route.to_string(), ask.operation.to_string());
        let found = {
            let (requester, digest, route) = (requester.clone(), digest.clone(), route.clone());
            self.blocking(move |store| {
                if let Some(grant) = store.use_grant(&requester, &route, &digest, now)? {
                    return Ok((Some(grant), None));
                }
                let scoped = store
                    .scoped_grants(&requester, &route, now)?
                    .into_iter()
                    .find(|g| {
                        g.operation
                            .as_deref()
                            .is_some_and(|p| portcullis_sdk::matching::glob(p, &operation))
                    });
                if scoped.is_some() {
                    return Ok((scoped, None));
                }
                Ok((None, store.pending_for(&requester, &route, &digest, now)?))
            })
            .await?
        };
        let request = match found {
            (Some(grant), _) => return self.granted(&grant, ask.request_id).await,
            (None, Some(pending)) => pending,
            (None, None) => self.create(&ask, requester.clone(), digest.clone()).await?,
        };
        self.wait(&request, &requester, &digest, ask.request_id, ask.hold)
            .await
    }

    /// A new approval request: on record, then stored, then announced.
    async fn create(
        &self,
        ask: &Ask<'_>,
        requester: Requester,
        digest: String,
    ) -> Result<ApprovalRequest, GatewayError> {
        let now = now_ms();
        let request = ApprovalRequest {
            id: format!("apr-{}", uuid::Uuid::new_v4().simple()),
            created_at: now,
            expires_at: now.saturating_add(ms(self.settings.request_ttl)),
            status: Status::Pending,
            requester,
            route: ask.route.to_string(),
            operation: ask.operation.to_string(),
            plugin: ask.plugin.to_string(),
            summary: ask.summary.chars().take(1024).collect(),
            request: masked_request(ask),
            digest,
            approver_groups: ask.approver_groups.to_vec(),
            decision: None,
        };
        self.record(
            "approval.requested",
            json!({
                "approval_id": request.id, "request_id": ask.request_id,
                "route": request.route, "operation": request.operation,
                "requester": request.requester, "approver_groups": request.approver_groups,
                "plugin": request.plugin, "summary": request.summary,
                "digest": request.digest, "expires_at": request.expires_at,
            }),
        )
        .await
        .map_err(GatewayError::AuditUnavailable)?;
        let stored = request.clone();
        self.blocking(move |store| store.create(&stored)).await?;
        tracing::info!(approval = %request.id, request_id = %ask.request_id, route = %request.route, operation = %request.operation, "approval requested");
        self.announce(&request);
        Ok(request)
    }

    /// Park a request until its approval request is decided or expires, `hold` passes, or
    /// the gateway stops.
    async fn wait(
        &self,
        request: &ApprovalRequest,
        requester: &Requester,
        digest: &str,
        request_id: &str,
        hold: Duration,
    ) -> Result<Held, GatewayError> {
        let deadline = tokio::time::Instant::now() + hold;
        let mut changed = self.changed.subscribe();
        let mut closing = self.closing.subscribe();
        let pending = Held::Pending {
            approval: request.id.clone(),
            expires_at: request.expires_at,
        };
        loop {
            changed.borrow_and_update();
            let id = request.id.clone();
            let current = self.blocking(move |store| store.get(&id)).await?;
            let Some(current) = current else {
                return Err(GatewayError::ApprovalsUnavailable(format!(
                    "approval request {} vanished from the store",
                    request.id
                )));
            };
            match current.status {
                Status::Pending => {}
                Status::Denied => {
                    return Ok(Held::Denied {
                        approval: current.id,
                        reason: current.decision.map(|d| d.reason).unwrap_or_default(),
                    });
                }
                Status::Expired => {
                    return Ok(Held::Expired {
                        approval: current.id,
                    });
                }
                Status::Approved => {
                    let (requester, route, digest) =
                        (requester.clone(), current.route.clone(), digest.to_string());
                    let grant = self
                        .blocking(move |store| {
                            store.use_grant(&requester, &route, &digest, now_ms())
                        })
                        .await?;
                    return match grant {
                        Some(grant) => self.granted(&grant, request_id).await,
                        None => Ok(Held::Used {
                            approval: current.id,
                        }),
                    };
                }
            }
            if *closing.borrow_and_update() {
                return Ok(pending);
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = closing.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(pending),
            }
        }
    }

    /// A grant let a request through: on record first.
    async fn granted(&self, grant: &Grant, request_id: &str) -> Result<Held, GatewayError> {
        let scoped = grant.digest.is_none();
        self.record(
            "approval.grant_used",
            json!({
                "approval_id": grant.request_id, "grant_id": grant.id,
                "request_id": request_id, "scoped": scoped,
                "operation": grant.operation, "requester": grant.requester,
            }),
        )
        .await
        .map_err(GatewayError::AuditUnavailable)?;
        Ok(Held::Granted {
            approval: grant.request_id.clone(),
            grant: grant.id.clone(),
            scoped,
        })
    }

    /// An approver's decision: separation of duties and group membership are checked (and a
    /// refusal is on record), the store takes the decision atomically, and then it is audited.
    pub async fn decide(
        &self,
        id: &str,
        approver: &Principal,
        approve: bool,
        verdict: Verdict,
    ) -> Result<ApprovalRequest, DecideError> {
        let owned = id.to_string();
        let request = self
            .blocking(move |store| store.get(&owned))
            .await
            .map_err(|e| DecideError::Unavailable(e.to_string()))?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let who = Approver {
            subject: approver.subject.clone(),
            issuer: approver.issuer.clone(),
            name: approver
                .claims
                .iter()
                .find(|(k, _)| k == "name" || k == "preferred_username")
                .map(|(_, v)| v.clone()),
        };
        let refusal = if approver.subject == request.requester.subject {
            Some(DecideError::SelfApproval(request.id.clone()))
        } else if !may_approve(approver, &request.approver_groups) {
            Some(DecideError::NotAnApprover {
                id: request.id.clone(),
                groups: request.approver_groups.join(", "),
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let why = match refusal {
                DecideError::SelfApproval(_) => "self-approval",
                _ => "not-an-approver",
            };
            tracing::warn!(approval = %request.id, approver = %who.subject, why, "approval decision refused");
            self.record(
                "approval.refused",
                json!({"approval_id": request.id, "approver": who, "requester": request.requester, "why": why, "approve": approve}),
            )
            .await
            .map_err(DecideError::Unavailable)?;
            return Err(refusal);
        }
        if !approve && verdict.reason.trim().is_empty() {
            return Err(DecideError::Invalid("a denial needs a reason".into()));
        }
        if verdict.reason.len() > 1024 {
            return Err(DecideError::Invalid(
                "the reason is longer than 1024 bytes".into(),
            ));
        }
        let now = now_ms();
        let scope = match (&verdict.scope, approve) {
            (None, _) => None,
            (Some(_), false) => {
                return Err(DecideError::Invalid(
                    "only an approval grants a scope".into(),
                ));
            }
            (Some(s), true) => {
                if s.operation.is_empty() || s.window.is_zero() {
                    return Err(DecideError::Invalid(
                        "a scope needs an operation pattern and a window above 0".into(),
                    ));
                }
                if s.window > self.settings.max_scope {
                    return Err(DecideError::Invalid(format!(
                        "a scope window may be at most {} (approvals.max_scope)",
                        humantime::format_duration(self.settings.max_scope)
                    )));
                }
                Some(Scope {
                    operation: s.operation.clone(),
                    until: now.saturating_add(ms(s.window)),
                })
            }
        };
        let decision = Decision {
            by: who.clone(),
            at: now,
            approved: approve,
            reason: verdict.reason.clone(),
            scope: scope.clone(),
        };
        let mut grants = Vec::new();
        if approve {
            grants.push(Grant {
                id: format!("grt-{}", uuid::Uuid::new_v4().simple()),
                request_id: request.id.clone(),
                requester: request.requester.clone(),
                route: request.route.clone(),
                digest: Some(request.digest.clone()),
                operation: None,
                created_at: now,
                expires_at: now.saturating_add(ms(self.settings.grant_ttl)),
                used_at: None,
            });
            if let Some(scope) = &scope {
                grants.push(Grant {
                    id: format!("grt-{}", uuid::Uuid::new_v4().simple()),
                    request_id: request.id.clone(),
                    requester: request.requester.clone(),
                    route: request.route.clone(),
                    digest: None,
                    operation: Some(scope.operation.clone()),
                    created_at: now,
                    expires_at: scope.until,
                    used_at: None,
                });
            }
        }
        let owned = request.id.clone();
        let decided = self
            .blocking(move |store| Ok(store.decide(&owned, &decision, &grants, now)))
            .await
            .map_err(|e| DecideError::Unavailable(e.to_string()))??;
        self.changed.send_modify(|n| *n += 1);
        let kind = if approve {
            "approval.approved"
        } else {
            "approval.denied"
        };
        tracing::info!(approval = %decided.id, approver = %who.subject, requester = %decided.requester.subject, "{kind}");
        self.record(
            kind,
            json!({
                "approval_id": decided.id, "requester": decided.requester, "approver": who,
                "reason": verdict.reason, "scope": scope, "route": decided.route,
                "operation": decided.operation, "digest": decided.digest,
            }),
        )
        .await
        .map_err(DecideError::Unavailable)?;
        Ok(decided)
    }

    /// Requests, newest first (pending only, or all), at most `limit`.
    pub async fn list(
        &self,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, GatewayError> {
        self.blocking(move |store| store.list(status, limit)).await
    }

    /// One request, its grants and its notification attempts.
    pub async fn show(
        &self,
        id: &str,
    ) -> Result<Option<(ApprovalRequest, Vec<Grant>, Vec<Notification>)>, GatewayError> {
        let id = id.to_string();
        self.blocking(move |store| {
            let Some(request) = store.get(&id)? else {
                return Ok(None);
            };
            Ok(Some((
                request,
                store.grants_of(&id)?,
                store.notifications(&id)?,
            )))
        })
        .await
    }

    /// Whether `principal` may decide `request` (in a group, and not the requester).
    pub fn may_decide(principal: &Principal, request: &ApprovalRequest) -> bool {
        principal.subject != request.requester.subject
            && may_approve(principal, &request.approver_groups)
    }

    /// Announce a new request to the webhooks that want it.
    fn announce(&self, request: &ApprovalRequest) {
        let targets = self
            .notifier
            .targets(&request.route, &request.approver_groups);
        self.announce_to(request, targets);
    }

    /// Announce again, after a restart, every pending request to each webhook that has not
    /// taken it yet (its deliveries were cut short, or never succeeded): nothing announced is
    /// lost to a restart. Receivers drop repeats by `X-Portcullis-Delivery`.
    async fn resume(&self) -> Result<usize, GatewayError> {
        let pending = self.list(Some(Status::Pending), 10_000).await?;
        let mut resumed = 0;
        for request in pending {
            let id = request.id.clone();
            let attempts = self.blocking(move |store| store.notifications(&id)).await?;
            let targets: Vec<String> = self
                .notifier
                .targets(&request.route, &request.approver_groups)
                .into_iter()
                .filter(|t| !attempts.iter().any(|a| a.ok && &a.target == t))
                .collect();
            resumed += targets.len();
            self.announce_to(&request, targets);
        }
        Ok(resumed)
    }

    /// Announce a request to `targets` in the background: every attempt is stored, and the
    /// outcome of each webhook is audited.
    fn announce_to(&self, request: &ApprovalRequest, targets: Vec<String>) {
        if targets.is_empty() {
            return;
        }
        let notice = Notice {
            id: request.id.clone(),
            route: request.route.clone(),
            operation: request.operation.clone(),
            requester: format!(
                "{} ({})",
                request.requester.subject, request.requester.issuer
            ),
            summary: request.summary.clone(),
            approver_groups: request.approver_groups.clone(),
            expires_at: request.expires_at,
            request: request.request.clone(),
            link: format!("{}#{}", self.page, request.id),
        };
        for target in targets {
            let (notifier, store, audit) = (
                self.notifier.clone(),
                self.store.clone(),
                self.audit.clone(),
            );
            let notice = notice.clone();
            tokio::spawn(async move {
                let (tx, mut rx) = mpsc::unbounded_channel::<Attempt>();
                let delivering = notifier.deliver(&target, &notice, move |a| {
                    let _ = tx.send(a.clone());
                });
                let recording = async {
                    let mut attempts = Vec::new();
                    while let Some(attempt) = rx.recv().await {
                        let row = Notification {
                            request_id: notice.id.clone(),
                            target: attempt.target.clone(),
                            attempt: attempt.attempt,
                            at: now_ms(),
                            ok: attempt.ok,
                            status: attempt.status,
                            error: attempt.error.clone(),
                        };
                        let store = store.clone();
                        let stored =
                            tokio::task::spawn_blocking(move || store.record_notification(&row))
                                .await;
                        if !matches!(stored, Ok(Ok(()))) {
                            tracing::error!(approval = %notice.id, "a notification attempt could not be stored");
                        }
                        attempts.push(attempt);
                    }
                    attempts
                };
                let (delivered, attempts) = tokio::join!(delivering, recording);
                if let Some(audit) = audit {
                    let errors: Vec<&str> =
                        attempts.iter().filter_map(|a| a.error.as_deref()).collect();
                    let record = json!({
                        "approval_id": notice.id, "target": target, "delivered": delivered,
                        "attempts": attempts.len(), "errors": errors,
                    });
                    if let Err(e) = audit.event("approval.notified", record).await {
                        tracing::error!(approval = %notice.id, error = %e, "audit: the notification record could not be written");
                    }
                }
            });
        }
    }

    /// Write an approval record to the audit log (fsync'ed); none without `[audit]`.
    async fn record(&self, kind: &str, fields: Value) -> Result<(), String> {
        match &self.audit {
            None => Ok(()),
            Some(audit) => audit
                .event(kind, fields)
                .await
                .map(|_| ())
                .map_err(|e| format!("audit log: {e}")),
        }
    }

    /// Run a store call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, GatewayError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || call(store.as_ref())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(GatewayError::ApprovalsUnavailable(e.to_string())),
            Err(e) => Err(GatewayError::Internal(format!("approval store task: {e}"))),
        }
    }
}

/// Expire pending requests past their time, every [`SWEEP`], and audit each; stops with the
/// approvals.
async fn sweep(approvals: std::sync::Weak<Approvals>) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(approvals) = approvals.upgrade() else {
            return;
        };
        let expired = approvals.blocking(|store| store.expire(now_ms())).await;
        match expired {
            Ok(expired) if !expired.is_empty() => {
                // The expiry is recorded before the held requests learn it (and answer their
                // clients): the evidence never trails what a client saw.
                for request in expired {
                    tracing::info!(approval = %request.id, "approval request expired");
                    let record = json!({
                        "approval_id": request.id, "requester": request.requester,
                        "route": request.route, "operation": request.operation,
                    });
                    if let Err(e) = approvals.record("approval.expired", record).await {
                        tracing::error!(approval = %request.id, error = %e, "audit: the expiry record could not be written");
                    }
                }
                approvals.changed.send_modify(|n| *n += 1);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "approvals: expiring stale requests failed"),
        }
    }
}

/// Whether a principal is in any of the approver groups (its `groups` or app `roles`).
fn may_approve(principal: &Principal, groups: &[String]) -> bool {
    groups
        .iter()
        .any(|g| principal.groups.contains(g) || principal.roles.contains(g))
}

/// The requester a grant is bound to; `anonymous` on a route open without authentication.
fn requester(principal: Option<&Principal>) -> Requester {
    match principal {
        Some(p) => Requester {
            subject: p.subject.clone(),
            issuer: p.issuer.clone(),
            tenant: p.tenant.clone(),
            app_id: p.app_id.clone(),
        },
        None => Requester {
            subject: "anonymous".into(),
            issuer: "none".into(),
            tenant: None,
            app_id: None,
        },
    }
}

/// The request digest a grant is bound to (with the route): SHA-256 over the method, the path
/// and query, the headers that
/// define the request (sorted; volatile ones and the caller's credential left out) and the
/// body, each length-prefixed so no two requests share an encoding.
pub fn digest(method: &str, path_and_query: &str, headers: &HeaderMap, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(b"portcullis-approval-digest-v1");
    field(method.as_bytes());
    field(path_and_query.as_bytes());
    let mut bound: Vec<(&str, &[u8])> = headers
        .iter()
        .filter(|(name, _)| !VOLATILE_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    bound.sort();
    for (name, value) in bound {
        field(name.as_bytes());
        field(value);
    }
    field(body);
    hex::encode(hash.finalize())
}

/// What approvers see of a request: method, URL with credential parameters redacted, the
/// values of a few descriptive headers (other bound headers by name only), and the body's
/// size, type and hash — never its content.
fn masked_request(ask: &Ask<'_>) -> Value {
    let (origin, path) = match ask.url.find("://").map(|i| i + 3) {
        Some(start) => match ask.url[start..].find('/') {
            Some(slash) => ask.url.split_at(start + slash),
            None => (ask.url, "/"),
        },
        None => ("", ask.url),
    };
    let headers: Vec<(String, String)> = ask
        .headers
        .iter()
        .filter(|(name, _)| !VOLATILE_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| {
            let shown = SHOWN_HEADERS.contains(&name.as_str());
            let value = match (shown, value.to_str()) {
                (true, Ok(v)) => v.chars().take(256).collect(),
                _ => "[REDACTED]".to_string(),
            };
            (name.as_str().to_string(), value)
        })
        .collect();
    json!({
        "method": ask.method,
        "url": format!("{origin}{}", crate::audit::redact_target(path)),
        "headers": headers,
        "body": {
            "size": ask.body.len(),
            "sha256": hex::encode(Sha256::digest(ask.body)),
            "content_type": ask.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        },
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_digest_binds_method_url_headers_and_body_but_not_volatile_headers() {
        let base = digest(
            "PUT",
            "https://a/b?x=1",
            &headers(&[("content-type", "application/json"), ("x-ms-date", "d1")]),
            b"{}",
        );
        let same = digest(
            "PUT",
            "https://a/b?x=1",
            &headers(&[
                ("x-ms-date", "d2"),
                ("content-type", "application/json"),
                ("x-ms-client-request-id", "other"),
                ("host", "gateway.example:8443"),
            ]),
            b"{}",
        );
        assert_eq!(
            base, same,
            "volatile headers and header order do not matter"
        );
        for other in [
            digest(
                "POST",
                "https://a/b?x=1",
                &headers(&[("content-type", "application/json")]),
                b"{}",
            ),
            digest(
                "PUT",
                "https://a/b?x=2",
                &headers(&[("content-type", "application/json")]),
                b"{}",
            ),
            digest(
                "PUT",
                "https://a/b?x=1",
                &headers(&[("content-type", "text/plain")]),
                b"{}",
            ),
            digest(
                "PUT",
                "https://a/b?x=1",
                &headers(&[("content-type", "application/json")]),
                b"{ }",
            ),
            digest(
                "PUT",
                "https://a/b?x=1",
                &headers(&[("content-type", "application/json"), ("if-match", "*")]),
                b"{}",
            ),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn approvers_see_no_credential_and_no_body() {
        let h = headers(&[
            ("content-type", "application/json"),
            ("x-api-key", "s3cr3t"),
            ("authorization", "Bearer tok"),
        ]);
        let ask = Ask {
            request_id: "r",
            route: "arm",
            operation: "op",
            plugin: "guard",
            principal: None,
            summary: "s",
            approver_groups: &[],
            hold: Duration::ZERO,
            method: "PUT",
            url: "https://h.example/c/b?sig=abc&comp=list",
            path_and_query: "/c/b?sig=abc&comp=list",
            headers: &h,
            body: b"{\"password\":\"hunter2\"}",
        };
        let shown = masked_request(&ask).to_string();
        for secret in ["s3cr3t", "tok", "abc", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("https://h.example/c/b?sig="), "{shown}");
        assert!(shown.contains("comp=list"), "{shown}");
        assert!(shown.contains("x-api-key"), "{shown}");
        assert!(shown.contains("application/json"), "{shown}");
    }

    #[test]
    fn approvers_are_group_or_role_members_and_never_the_requester() {
        let mut p = Principal {
            subject: "alice".into(),
            issuer: "i".into(),
            tenant: None,
            app_id: None,
            roles: vec!["approver".into()],
            groups: vec!["ops".into()],
            groups_complete: true,
            scopes: vec![],
            claims: vec![],
        };
        let mut request = ApprovalRequest {
            id: "apr-1".into(),
            created_at: 0,
            expires_at: 1,
            status: Status::Pending,
            requester: requester(None),
            route: "r".into(),
            operation: "o".into(),
            plugin: "p".into(),
            summary: String::new(),
            request: Value::Null,
            digest: String::new(),
            approver_groups: vec!["ops".into()],
            decision: None,
        };
        assert!(Approvals::may_decide(&p, &request));
        request.approver_groups = vec!["approver".into()];
        assert!(Approvals::may_decide(&p, &request));
        request.approver_groups = vec!["sre".into()];
        assert!(!Approvals::may_decide(&p, &request));
        request.approver_groups = vec!["ops".into()];
        request.requester.subject = "alice".into();
        assert!(!Approvals::may_decide(&p, &request));
        p.subject = "bob".into();
        assert!(Approvals::may_decide(&p, &request));
    }
}
