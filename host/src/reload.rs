//! Hot reload: the gateway serving now ([`Live`]), rebuilt from the configuration file and the
//! plugin directory while requests flow, and published atomically with a new generation.
//!
//! - A reload reads the configuration file again, loads every plugin it names (a plugin whose
//!   file, configuration and settings are unchanged is kept as it is; a changed one is
//!   compiled off the request path, with the engine's compiled-component cache, and described,
//!   checked against the contract version and configured), builds the routes and access rules,
//!   and swaps the whole gateway in one atomic store. A request holds the gateway it started
//!   with until it ends, so in-flight requests finish on the old plugins and new requests get
//!   the new ones; nothing is dropped or decided by a mix of the two.
//! - A candidate that fails anywhere (unreadable or invalid configuration, a truncated, corrupt,
//!   wrongly shaped or failing-`configure` plugin) is rejected as a whole with one log line
//!   naming the reason and every candidate file's sha256; the running gateway keeps serving.
//! - Settings a running gateway cannot change (listeners, TLS, header limit, engine limits,
//!   plugin directory, identity providers, reload settings) keep their running values and are
//!   reported as needing a restart, in the log and in [`Status`].
//! - A change that changes nothing (the same configuration bytes, every plugin kept) publishes
//!   nothing: editors' save patterns and repeated events cost one cheap check.
//!
//! [`watch`] triggers reloads from the file system (notify; debounced), so the ways files really
//! land all work: written in place, written then renamed over, deleted and recreated, and a
//! Kubernetes ConfigMap's `..data` symlink swap; the admin API triggers them on demand.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use serde::Serialize;
use sha2::Digest;

use crate::config::Config;
use crate::gateway::{BuildError, Gateway};
use crate::plugin::load_set_reusing;

/// The gateway serving now, and how it got there.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Gateway>,
    /// The configuration file, and the SHA-256 of the bytes the current gateway was built
    /// from.
    source: Option<PathBuf>,
    applied_sha256: Mutex<Option<String>>,
    status: Mutex<Status>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// What `GET /plugins` on the admin listener shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The generation serving now (1 at start, +1 per applied reload).
    pub generation: u64,
    /// When it was published, milliseconds since the Unix epoch.
    pub published_at_ms: u64,
    /// Reloads applied since start.
    pub applied: u64,
    /// Reloads rejected since start.
    pub rejected: u64,
    /// The last reload attempt, if any.
    pub last: Option<Attempt>,
}

/// One reload attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// What asked for it: `watch` or `admin`.
    pub trigger: String,
    /// When it ended, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `applied`, `unchanged` or `rejected`.
    pub outcome: Outcome,
    /// The generation serving after it.
    pub generation: u64,
    /// Why it was rejected.
    pub error: Option<String>,
    /// Settings that changed in the file but need a restart to take effect.
    pub restart_needed: Vec<String>,
}

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A new generation is serving.
    Applied,
    /// Nothing changed; nothing was published.
    Unchanged,
    /// The candidate failed; the running generation keeps serving.
    Rejected,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Live {
    /// Serve `gateway`; reloads read `gateway.config.source`, if it has one.
    pub fn new(gateway: Gateway) -> Arc<Live> {
        let source = gateway.config.source.clone();
        let applied_sha256 = gateway.config.source_sha256.clone();
        let generation = gateway.plugins.generation();
        Arc::new(Live {
            current: ArcSwap::from_pointee(gateway),
            source,
            applied_sha256: Mutex::new(applied_sha256),
            status: Mutex::new(Status {
                generation,
                published_at_ms: now_ms(),
                applied: 0,
                rejected: 0,
                last: None,
            }),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The gateway serving now. A request keeps what this returns until it ends.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// The generation serving now and the history of reloads.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rebuild from the configuration file and the plugin directory and publish the result,
    /// or keep the running gateway when anything fails. See the module documentation.
    pub async fn reload(&self, trigger: &str) -> Attempt {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.gateway();
        // What the audit record of a rejection says of the bytes that were tried.
        let mut tried = (None, String::new());
        let (outcome, error, restart_needed) = match self.build(&old).await {
            Ok(Candidate::Unchanged { restart_needed }) => {
                (Outcome::Unchanged, None, restart_needed)
            }
            Ok(Candidate::New {
                gateway,
                restart_needed,
            }) => {
                let generation = gateway.plugins.generation();
                let plugins = describe_plugins(&gateway);
                *self
                    .applied_sha256
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = gateway.config.source_sha256.clone();
                self.current.store(Arc::new(gateway));
                tracing::info!(
                    trigger,
                    generation,
                    %plugins,
                    restart_needed = %restart_needed.join(", "),
                    "policy reloaded"
                );
                (Outcome::Applied, None, restart_needed)
            }
            Err(Rejection {
                error,
                config_sha256,
                candidates,
            }) => {
                tracing::error!(
                    trigger,
                    generation = old.plugins.generation(),
                    %candidates,
                    %error,
                    "policy reload rejected; the running generation keeps serving"
                );
                tried = (config_sha256, candidates);
                (Outcome::Rejected, Some(error), Vec::new())
            }
        };
        if !restart_needed.is_empty() {
            tracing::warn!(
                settings = %restart_needed.join(", "),
                "changed settings need a restart to take effect; the running values stay"
            );
        }
        let attempt = {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                Outcome::Applied => {
                    status.applied += 1;
                    status.generation = self.gateway().plugins.generation();
                    status.published_at_ms = now_ms();
                }
                Outcome::Rejected => status.rejected += 1,
                Outcome::Unchanged => {}
            }
            let attempt = Attempt {
                trigger: trigger.to_string(),
                at_ms: now_ms(),
                outcome,
                generation: status.generation,
                error,
                restart_needed,
            };
            status.last = Some(attempt.clone());
            attempt
        };
        if let Some(audit) = &self.gateway().audit {
            let written = match attempt.outcome {
                Outcome::Applied => {
                    audit
                        .event("config.loaded", loaded_record(&self.gateway(), trigger))
                        .await
                }
                Outcome::Rejected => {
                    let record = serde_json::json!({
                        "trigger": trigger, "error": attempt.error,
                        "generation": attempt.generation,
                        "config_sha256": tried.0,
                        "candidates": tried.1,
                    });
                    audit.event("config.rejected", record).await
                }
                Outcome::Unchanged => Ok(0),
            };
            if let Err(e) = written {
                tracing::error!(error = %e, "audit: the reload record could not be written");
            }
        }
        attempt
    }

    /// The candidate gateway, or why there is none.
    async fn build(&self, old: &Gateway) -> Result<Candidate, Rejection> {
        let unread = |error: String| Rejection {
            error,
            config_sha256: None,
            candidates: UNUSABLE.into(),
        };
        let path = self
            .source
            .as_deref()
            .ok_or_else(|| unread("the gateway was started without a configuration file".into()))?;
        // One read: the bytes parsed are the bytes whose digest is recorded.
        let bytes = std::fs::read(path)
            .map_err(|e| unread(format!("cannot read {}: {e}", path.display())))?;
        let mut config = Config::from_file_bytes(path, &bytes).map_err(|e| Rejection {
            error: e.to_string(),
            config_sha256: Some(hex::encode(sha2::Sha256::digest(&bytes))),
            candidates: UNUSABLE.into(),
        })?;
        let rejected = |config: &Config, error: String| Rejection {
            error,
            config_sha256: config.source_sha256.clone(),
            candidates: candidate_digests(config),
        };
        let restart_needed = keep_running_settings(&old.config, &mut config);
        let generation = old.plugins.generation() + 1;
        let plugins = load_set_reusing(
            &old.engine,
            &config.plugin_specs(),
            generation,
            Some(&old.plugins),
        )
        .await
        .map_err(|errors| rejected(&config, BuildError::Plugins(errors).to_string()))?;
        let same_plugins = plugins.plugins().len() == old.plugins.plugins().len()
            && plugins
                .plugins()
                .iter()
                .zip(old.plugins.plugins())
                .all(|(new, old)| Arc::ptr_eq(new, old));
        let same_config = *self
            .applied_sha256
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            == config.source_sha256;
        if same_plugins && same_config {
            return Ok(Candidate::Unchanged { restart_needed });
        }
        let mut gateway = Gateway::assemble(
            &config,
            old.engine.clone(),
            Arc::new(plugins),
            old.identity.clone(),
        )
        .map_err(|e| rejected(&config, e.to_string()))?;
        gateway.audit = old.audit.clone();
        gateway.approvals = old.approvals.clone();
        Ok(Candidate::New {
            gateway,
            restart_needed,
        })
    }
}

enum Candidate {
    Unchanged {
        restart_needed: Vec<String>,
    },
    New {
        gateway: Gateway,
        restart_needed: Vec<String>,
    },
}

/// Why a reload was rejected, the SHA-256 of the configuration bytes tried (none when the file
/// could not be read), and the plugin files they name with their digests.
struct Rejection {
    error: String,
    config_sha256: Option<String>,
    candidates: String,
}

/// The `candidates` of a configuration that does not parse.
const UNUSABLE: &str = "(configuration unusable)";

/// `name=sha256` of every plugin file `config` names, for the log and the audit record of a
/// rejected reload (`unreadable` when it cannot be read).
fn candidate_digests(config: &Config) -> String {
    config
        .plugin_specs()
        .iter()
        .map(|spec| {
            let digest = std::fs::read(&spec.file).map_or_else(
                |_| "unreadable".to_string(),
                |bytes| hex::encode(sha2::Sha256::digest(&bytes)),
            );
            format!(
                "{}={digest}",
                spec.alias.as_deref().unwrap_or(spec.name.as_str())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `config.loaded` audit record of a gateway: generation, the configuration file's
/// SHA-256, and every plugin loaded with its SHA-256.
pub fn loaded_record(gateway: &Gateway, trigger: &str) -> serde_json::Value {
    let config_sha256 = gateway.config.source_sha256.clone();
    let plugins: Vec<serde_json::Value> = gateway
        .plugins
        .plugins()
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.id().name, "version": p.id().version, "sha256": p.id().sha256,
            })
        })
        .collect();
    serde_json::json!({
        "trigger": trigger,
        "generation": gateway.plugins.generation(),
        "config_sha256": config_sha256,
        "plugins": plugins,
    })
}

/// `name@version sha256:… ` of every plugin of a gateway, for the log.
fn describe_plugins(gateway: &Gateway) -> String {
    gateway
        .plugins
        .plugins()
        .iter()
        .map(|p| {
            format!(
                "{}@{} sha256:{}",
                p.id().name,
                p.id().version,
                p.id().sha256
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Put the running values of the settings a reload cannot change back into `new`; name those
/// that differed.
fn keep_running_settings(running: &Config, new: &mut Config) -> Vec<String> {
    let mut changed = Vec::new();
    if new.server != running.server {
        changed.push("server".to_string());
        new.server = running.server.clone();
    }
    if new.engine != running.engine {
        changed.push("engine".to_string());
        new.engine = running.engine.clone();
    }
    if new.plugin_dir() != running.plugin_dir() {
        changed.push("plugin_dir".to_string());
        new.plugin_dir = running.plugin_dir.clone();
        new.base_dir = running.base_dir.clone();
    }
    if new.audit != running.audit {
        changed.push("audit".to_string());
        new.audit = running.audit.clone();
    }
    if new.approvals != running.approvals {
        changed.push("approvals".to_string());
        new.approvals = running.approvals.clone();
    }
    if new.sessions != running.sessions {
        changed.push("sessions".to_string());
        new.sessions = running.sessions.clone();
    }
    if new.identity_providers != running.identity_providers {
        changed.push("identity_provider".to_string());
        new.identity_providers = running.identity_providers.clone();
    }
    if new.reload != running.reload {
        changed.push("reload".to_string());
        new.reload = running.reload.clone();
    }
    changed
}

/// A file-system watch that reloads `live`; dropping it stops watching.
pub struct Watching {
    _watcher: RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Watching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watching").finish_non_exhaustive()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watch the plugin directory and the configuration file's directory (not recursively: a
/// Kubernetes volume's `..data` swap is a rename in the directory itself) and reload `live`
/// once `debounce` has passed without a further change.
pub fn watch(live: &Arc<Live>, debounce: Duration) -> Result<Watching, String> {
    let gateway = live.gateway();
    let config = &gateway.config;
    let source = config
        .source
        .as_deref()
        .ok_or("the gateway was started without a configuration file")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && is_change(&event.kind)
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch files: {e}"))?;
    let config_dir = source.parent().unwrap_or(Path::new("."));
    for dir in [config.plugin_dir(), config_dir.to_path_buf()] {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    }
    let live = live.clone();
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Quiet for `debounce`: the file (or the set of files) has landed.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            live.reload("watch").await;
        }
    });
    tracing::info!(
        plugin_dir = %config.plugin_dir().display(),
        config = %source.display(),
        ?debounce,
        "watching for plugin and policy changes"
    );
    Ok(Watching {
        _watcher: watcher,
        task,
    })
}

/// Whether an event may change what a reload reads: not reads, opens or access times (a
/// reload reading the files must not trigger the next one).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}
