//! The configuration file: serde structs (unknown keys refused) and `validate()`, which
//! reports every problem at once, each with its TOML key path.
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::plugin::{EngineSettings, FailurePolicy, InstanceMode, PluginSettings, PluginSpec};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding plugin components; relative to the configuration file.
    pub plugin_dir: PathBuf,
    /// Engine-wide limits.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The plugins to load, `[[plugin]]` tables.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// The directory of the configuration file, for relative paths (set by `load`).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[engine]`: limits shared by every plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Plugin instances alive at once, across all plugins.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// The largest memory limit any plugin may be given.
    #[serde(default = "default_max_memory")]
    pub max_memory: ByteSize,
    /// Directory for compiled plugin artifacts (relative to the configuration file); unset:
    /// compile at every start. Protect it like the gateway binary.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_instances: default_max_instances(),
            max_memory: default_max_memory(),
            cache_dir: None,
        }
    }
}

fn default_max_instances() -> u32 {
    1000
}

fn default_max_memory() -> ByteSize {
    ByteSize::mib(256)
}

/// `[[plugin]]`: one plugin to load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The name the plugin declares; routes refer to it by this name.
    pub name: String,
    /// Component file, relative to `plugin_dir`.
    pub file: PathBuf,
    /// Deadline for one hook call, e.g. `"50ms"`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Linear memory limit per instance, e.g. `"64MiB"`.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    /// `fail-closed` (default) or `fail-open`.
    #[serde(default)]
    pub failure: FailurePolicy,
    /// `fresh` (default): a new instance per call; `reuse`: instances serve `reuse_calls` calls.
    #[serde(default)]
    pub instance: InstanceKind,
    /// Calls one instance serves in `reuse` mode.
    #[serde(default = "default_reuse_calls")]
    pub reuse_calls: u32,
    /// The plugin's own configuration, handed to it as JSON.
    #[serde(default = "empty_table")]
    pub config: toml::Table,
}

/// `instance = "fresh" | "reuse"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceKind {
    /// A new instance per call.
    #[default]
    Fresh,
    /// Instances reused for `reuse_calls` calls.
    Reuse,
}

fn default_timeout() -> Duration {
    PluginSettings::default().timeout
}

fn default_memory_limit() -> ByteSize {
    ByteSize::b(PluginSettings::default().memory_limit)
}

fn default_reuse_calls() -> u32 {
    1000
}

fn empty_table() -> toml::Table {
    toml::Table::new()
}

/// The longest deadline a plugin may have: a guest must never hold a request for long
/// (waits such as approvals belong in the host).
pub const TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// One configuration problem, at a TOML key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `plugin[1].timeout`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The configuration could not be used. Lists every problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The file is not valid TOML for this schema.
    #[error("configuration {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and key).
        reason: String,
    },
    /// The values break the rules.
    #[error("configuration has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl Config {
    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, &base_dir).map_err(|e| match e {
            ConfigError::Parse { reason, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Parse and validate configuration text; relative paths are taken from `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            reason: e.to_string(),
        })?;
        config.base_dir = base_dir.to_path_buf();
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every problem in the values, each at its key path.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        let dir = self.plugin_dir();
        if !dir.is_dir() {
            problem(
                "plugin_dir".into(),
                format!("{} is not a directory", dir.display()),
            );
        }
        if self.engine.max_instances == 0 {
            problem("engine.max_instances".into(), "must be at least 1".into());
        }
        let mut names = HashSet::new();
        for (i, p) in self.plugins.iter().enumerate() {
            let key = |field: &str| format!("plugin[{i}].{field}");
            if !names.insert(p.name.as_str()) {
                problem(key("name"), format!("{:?} is loaded twice", p.name));
            }
            let file = dir.join(&p.file);
            if !file.is_file() {
                problem(key("file"), format!("{} does not exist", file.display()));
            }
            if p.timeout.is_zero() || p.timeout > TIMEOUT_MAX {
                problem(
                    key("timeout"),
                    format!("must be between 1ms and {TIMEOUT_MAX:?}"),
                );
            }
            if p.memory_limit > self.engine.max_memory {
                problem(
                    key("memory_limit"),
                    format!(
                        "{} is above engine.max_memory ({})",
                        p.memory_limit, self.engine.max_memory
                    ),
                );
            }
            if p.memory_limit < ByteSize::mib(1) {
                problem(key("memory_limit"), "must be at least 1MiB".into());
            }
            if p.instance == InstanceKind::Reuse && p.reuse_calls == 0 {
                problem(key("reuse_calls"), "must be at least 1".into());
            }
        }
        problems
    }

    /// The plugin directory, resolved against the configuration file's directory.
    pub fn plugin_dir(&self) -> PathBuf {
        self.base_dir.join(&self.plugin_dir)
    }

    /// Engine settings for `PluginEngine::new`.
    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            max_instances: self.engine.max_instances,
            max_memory: self.engine.max_memory.as_u64(),
            cache_dir: self
                .engine
                .cache_dir
                .as_ref()
                .map(|d| self.base_dir.join(d)),
        }
    }

    /// What to load, for `plugin::load_set`.
    pub fn plugin_specs(&self) -> Vec<PluginSpec> {
        let dir = self.plugin_dir();
        self.plugins
            .iter()
            .map(|p| PluginSpec {
                name: p.name.clone(),
                file: dir.join(&p.file),
                config: serde_json::to_value(&p.config).unwrap_or(serde_json::Value::Null),
                settings: PluginSettings {
                    timeout: p.timeout,
                    memory_limit: p.memory_limit.as_u64(),
                    failure: p.failure,
                    instance: match p.instance {
                        InstanceKind::Fresh => InstanceMode::Fresh,
                        InstanceKind::Reuse => InstanceMode::Reuse {
                            calls: p.reuse_calls,
                        },
                    },
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        for f in files {
            std::fs::write(dir.path().join("plugins").join(f), b"").unwrap();
        }
        dir
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let dir = dir_with(&["a.wasm"]);
        let text = r#"
            plugin_dir = "plugins"
            [engine]
            max_memory = "32MiB"
            [[plugin]]
            name = "a"
            file = "a.wasm"
            timeout = "0s"
            memory_limit = "16MiB"
            [[plugin]]
            name = "a"
            file = "missing.wasm"
            memory_limit = "64MiB"
            instance = "reuse"
            reuse_calls = 0
        "#;
        let Err(ConfigError::Invalid(problems)) = Config::parse(text, dir.path()) else {
            panic!("expected problems");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "plugin[0].timeout",
                "plugin[1].name",
                "plugin[1].file",
                "plugin[1].memory_limit",
                "plugin[1].reuse_calls"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let dir = dir_with(&[]);
        let err = Config::parse("plugin_dir = \"plugins\"\ncolour = 1\n", dir.path()).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn plugin_config_tables_become_json() {
        let dir = dir_with(&["a.wasm"]);
        let text = r#"
            plugin_dir = "plugins"
            [[plugin]]
            name = "a"
            file = "a.wasm"
            failure = "fail-open"
            timeout = "250ms"
            config = { blocked = ["DELETE"], depth = 2 }
        "#;
        let config = Config::parse(text, dir.path()).unwrap();
        let spec = &config.plugin_specs()[0];
        assert_eq!(
            spec.config,
            serde_json::json!({"blocked": ["DELETE"], "depth": 2})
        );
        assert_eq!(spec.settings.timeout, Duration::from_millis(250));
        assert_eq!(spec.settings.failure, FailurePolicy::FailOpen);
        assert_eq!(spec.file, dir.path().join("plugins").join("a.wasm"));
    }
}
