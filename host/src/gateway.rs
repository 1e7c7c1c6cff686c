//! The gateway's state, built from a configuration: the plugin engine, the loaded plugin set,
//! and the routes with their chains and upstreams. A reload (`reload.rs`) builds a new one.
use std::sync::Arc;

use crate::approval::Approvals;
use crate::audit::Audit;
use crate::auth::{Access, Identity};
use crate::config::Config;
use crate::plugin::{self, PluginEngine, PluginError, PluginSet};
use crate::route::{Route, host_of};
use crate::upstream::{Upstream, UpstreamError};

/// Everything a request needs. Immutable once built: a reload builds a new one, and a request
/// keeps the one it started with.
#[derive(Debug)]
pub struct Gateway {
    /// Routes in configuration order: the first that serves a request takes it.
    pub routes: Vec<Route>,
    /// The loaded plugins.
    pub plugins: Arc<PluginSet>,
    /// The identity providers and the cache of verified tokens (kept across reloads).
    pub identity: Arc<Identity>,
    /// The plugin engine (kept across reloads, with its compiled-component cache).
    pub engine: PluginEngine,
    /// The configuration this gateway was built from.
    pub config: Arc<Config>,
    /// The key for keyed-hash masking; none configured: such plans fail closed.
    pub hash_key: Option<Vec<u8>>,
    /// Largest request head (URI and headers) accepted: `server.max_header_bytes`.
    pub max_header_bytes: u64,
    /// The audit log (kept across reloads); none without `[audit]`.
    pub audit: Option<Arc<Audit>>,
    /// The approval workflow (kept across reloads); none without `[approvals]`.
    pub approvals: Option<Arc<Approvals>>,
}

/// The gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The plugin engine failed, or a route names a plugin that is not loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Plugins failed to load (every failure listed).
    #[error("{} plugin(s) failed to load:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Plugins(Vec<PluginError>),
    /// An identity provider could not be set up.
    #[error("{0}")]
    Identity(String),
    /// The hash key of the masking settings could not be read.
    #[error("masking.hash_key_file: {0}")]
    HashKey(String),
    /// A route's upstream could not be set up.
    #[error("route[{index}] ({name}): {source}")]
    Upstream {
        /// Position in the configuration.
        index: usize,
        /// Route name.
        name: String,
        /// Why.
        source: UpstreamError,
    },
}

impl Gateway {
    /// Load the plugins, fetch the identity providers' keys, and build the routes of a
    /// validated configuration.
    pub async fn build(config: &Config) -> Result<Gateway, BuildError> {
        let engine = PluginEngine::new(config.engine_settings())?;
        let plugins = Arc::new(
            plugin::load_set(&engine, &config.plugin_specs(), 1)
                .await
                .map_err(BuildError::Plugins)?,
        );
        let identity = Identity::start(config)
            .await
            .map_err(BuildError::Identity)?;
        Gateway::assemble(config, engine, plugins, Arc::new(identity))
    }

    /// Build the routes of a configuration over an engine, a loaded plugin set and identity.
    pub fn assemble(
        config: &Config,
        engine: PluginEngine,
        plugins: Arc<PluginSet>,
        identity: Arc<Identity>,
    ) -> Result<Gateway, BuildError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        // Names were validated with the configuration; an unknown one here matches nothing.
        let providers = |names: &[String]| -> Vec<usize> {
            match names.is_empty() {
                true => (0..identity.providers().len()).collect(),
                false => names
                    .iter()
                    .map(|n| identity.position(n).unwrap_or(usize::MAX))
                    .collect(),
            }
        };
        for (index, r) in config.routes.iter().enumerate() {
            let upstream =
                Upstream::build(r, &config.base_dir).map_err(|source| BuildError::Upstream {
                    index,
                    name: r.name.clone(),
                    source,
                })?;
            let mut access = Vec::with_capacity(r.access.len());
            for rule in &r.access {
                let chain = plugins.chain(rule.plugins.as_ref().unwrap_or(&r.plugins))?;
                let rule_providers = match rule.identity_providers.is_empty() {
                    true => Vec::new(),
                    false => providers(&rule.identity_providers),
                };
                access.push(Access::new(rule, rule_providers, chain));
            }
            routes.push(Route::new(
                r,
                plugins.chain(&r.plugins)?,
                upstream,
                providers(&r.identity_providers),
                access,
            ));
        }
        let hash_key = match &config.masking.hash_key_file {
            None => None,
            Some(file) => Some(read_hash_key(&config.path(file))?),
        };
        Ok(Gateway {
            routes,
            plugins,
            identity,
            engine,
            config: Arc::new(config.clone()),
            hash_key,
            max_header_bytes: config.server.max_header_bytes.as_u64(),
            audit: None,
            approvals: None,
        })
    }

    /// The route serving an authority (host, maybe with port) and path.
    pub fn route(&self, authority: Option<&str>, path: &str) -> Option<&Route> {
        let host = authority.map(host_of);
        self.routes.iter().find(|r| r.serves(host, path))
    }
}

/// Shortest hash key accepted: an HMAC-SHA-256 key of less than 256 bits can be guessed more
/// easily than the hash it keys.
const HASH_KEY_MIN: usize = 32;

/// The masking hash key: the file's bytes (a trailing line end ignored), at least
/// [`HASH_KEY_MIN`] of them. The error names the file, never its content.
fn read_hash_key(path: &std::path::Path) -> Result<Vec<u8>, BuildError> {
    let key =
        crate::credential::read_secret(path).map_err(|e| BuildError::HashKey(e.to_string()))?;
    if key.len() < HASH_KEY_MIN {
        return Err(BuildError::HashKey(format!(
            "{}: {} bytes, at least {HASH_KEY_MIN} needed (e.g. `head -c 32 /dev/urandom > FILE`)",
            path.display(),
            key.len()
        )));
    }
    Ok(key)
}
