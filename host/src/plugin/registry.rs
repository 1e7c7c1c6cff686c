//! Loading plugin files into a `PluginSet`: read, compile (or take from the cache), check the
//! contract, `describe`, check the descriptor against the configuration, `configure`.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::Digest;

use super::contract;
use super::host::PluginContext;
use super::{Plugin, PluginEngine, PluginError, PluginId, PluginSet, PluginSettings};

/// What the operator asked for: a plugin file, the name it must declare, its configuration
/// and how it runs.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The name the plugin must declare in `describe`.
    pub name: String,
    /// The name routes use for this plugin with this configuration, when it is loaded more
    /// than once (e.g. a configuration per identity); unset: `name`.
    pub alias: Option<String>,
    /// The component file.
    pub file: PathBuf,
    /// The operator's configuration, handed to `configure` and `config()` as JSON.
    pub config: serde_json::Value,
    /// Limits, failure policy, instance mode.
    pub settings: PluginSettings,
}

/// Load one plugin. Reading and compiling run on the runtime's blocking pool, so a large
/// component never stalls the reactor; `describe` and `configure` run as async calls.
pub async fn load_plugin(
    engine: &PluginEngine,
    spec: &PluginSpec,
) -> Result<Arc<Plugin>, PluginError> {
    let file = spec.file.display().to_string();
    let (pre, sha256) = {
        let (engine, path, file) = (engine.clone(), spec.file.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(|e| PluginError::Read {
                file: file.clone(),
                reason: e.to_string(),
            })?;
            engine.prepare(&file, &bytes)
        })
        .await
        .map_err(|e| PluginError::Engine(format!("plugin compiler failed: {e}")))??
    };
    let config = serde_json::to_string(&spec.config).map_err(|e| PluginError::Describe {
        plugin: file.clone(),
        reason: format!("configuration cannot be written as JSON: {e}"),
    })?;
    let context = |patterns| {
        Arc::new(PluginContext {
            name: spec.name.as_str().into(),
            config: config.clone(),
            patterns,
            counters: Mutex::new(HashMap::new()),
        })
    };

    // `describe` runs before the plugin's own name is known: errors name the configured name,
    // the file and the digest.
    let provisional_id = Arc::new(PluginId {
        name: spec.name.clone(),
        version: "?".into(),
        sha256: sha256.clone(),
    });
    let provisional = Plugin::new(
        provisional_id,
        super::Descriptor {
            name: spec.name.clone(),
            version: String::new(),
            phases: super::Phases::empty(),
            request_body_limit: 0,
            response_body_limit: 0,
            request_content_types: Vec::new(),
            response_content_types: Vec::new(),
            patterns: Vec::new(),
            config_schema: None,
        },
        spec.settings.clone(),
        context(Vec::new()),
        engine.clone(),
        pre.clone(),
    );
    let described_as = format!("{} ({file}, sha256:{})", spec.name, &sha256[..12]);
    let descriptor = provisional
        .describe()
        .await
        .map_err(|e| PluginError::Describe {
            plugin: described_as.clone(),
            reason: e.to_string(),
        })?;
    let patterns =
        contract::check_descriptor(&descriptor).map_err(|reason| PluginError::Describe {
            plugin: described_as.clone(),
            reason,
        })?;
    if descriptor.name != spec.name {
        return Err(PluginError::Describe {
            plugin: described_as,
            reason: format!(
                "declares the name {:?} but the configuration loads it as {:?}",
                descriptor.name, spec.name
            ),
        });
    }

    let id = Arc::new(PluginId {
        name: descriptor.name.clone(),
        version: descriptor.version.clone(),
        sha256,
    });
    let plugin = Plugin::new(
        id,
        descriptor,
        spec.settings.clone(),
        context(patterns),
        engine.clone(),
        pre,
    );
    plugin.configure().await?;
    tracing::info!(plugin = %plugin.id(), "plugin loaded");
    Ok(Arc::new(plugin))
}

/// Load every plugin into a set with this generation number. Every failure is reported, not
/// just the first; a set is returned only when all of them loaded.
pub async fn load_set(
    engine: &PluginEngine,
    specs: &[PluginSpec],
    generation: u64,
) -> Result<PluginSet, Vec<PluginError>> {
    load_set_reusing(engine, specs, generation, None).await
}

/// [`load_set`], taking from `previous` every plugin whose file (by sha256), configuration,
/// settings and name are unchanged: it is not described, configured or re-instantiated again,
/// keeps its load time and its warm instances.
pub async fn load_set_reusing(
    engine: &PluginEngine,
    specs: &[PluginSpec],
    generation: u64,
    previous: Option<&PluginSet>,
) -> Result<PluginSet, Vec<PluginError>> {
    let mut plugins = Vec::new();
    let mut errors = Vec::new();
    for spec in specs {
        let known_as = spec.alias.clone().unwrap_or_else(|| spec.name.clone());
        let unchanged = match previous.and_then(|set| set.get(&known_as)) {
            Some(old) => unchanged(old, spec).await.then(|| old.clone()),
            None => None,
        };
        let loaded = match unchanged {
            Some(old) => Ok(old),
            None => load_plugin(engine, spec).await,
        };
        match loaded {
            Ok(p) => plugins.push((known_as, p)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(PluginSet::named(plugins, generation))
    } else {
        Err(errors)
    }
}

/// Whether `old` is what `spec` would load: same name, settings, configuration and file bytes.
async fn unchanged(old: &Plugin, spec: &PluginSpec) -> bool {
    if old.id().name != spec.name || *old.settings() != spec.settings {
        return false;
    }
    if serde_json::to_string(&spec.config).ok().as_deref() != Some(old.config_text()) {
        return false;
    }
    let path = spec.file.clone();
    let digest = tokio::task::spawn_blocking(move || {
        std::fs::read(path).map(|bytes| hex::encode(sha2::Sha256::digest(&bytes)))
    })
    .await;
    matches!(digest, Ok(Ok(d)) if d == old.id().sha256)
}
