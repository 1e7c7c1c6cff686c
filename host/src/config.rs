//! The configuration file: serde structs (unknown keys refused) and `validate()`, which
//! reports every problem at once, each with its TOML key path.
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
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
    /// Listeners, TLS and shutdown.
    #[serde(default)]
    pub server: ServerConfig,
    /// The routes, `[[route]]` tables, tried in order; the first match serves the request.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
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

/// `[server]`: where the gateway listens and how it stops.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The gateway's listener, e.g. `"127.0.0.1:8443"`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// TLS certificate chain and key (PEM files). Required unless `plaintext = true`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Serve plain HTTP instead of TLS: for local development only.
    #[serde(default)]
    pub plaintext: bool,
    /// The admin listener (`/healthz`, `/readyz`); unset: none.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// How long a shutdown waits for in-flight requests, e.g. `"10s"`.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Largest request head (request line and headers) accepted; larger gets 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: ByteSize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tls: None,
            plaintext: false,
            admin_listen: None,
            shutdown_grace: default_shutdown_grace(),
            max_header_bytes: default_max_header_bytes(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}

fn default_max_header_bytes() -> ByteSize {
    ByteSize::kib(64)
}

/// `[server.tls]`: the gateway's certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[[route]]`: which requests go where, through which plugins, with which credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name; plugins see it as `request.route`, the audit log records it.
    pub name: String,
    /// What the upstream is, which decides the `operation` plugins see and the error shape.
    #[serde(default)]
    pub kind: RouteKind,
    /// Host the client addressed (without port, case-insensitive); unset: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix, matched on whole segments (`/a` matches `/a` and `/a/b`, not `/ab`).
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Upstream base URL, `https://…` or `http://…`; the request path is appended to its path.
    pub upstream: String,
    /// PEM CA bundle to trust for an https upstream instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `azure-storage` only: the account is the first path segment (Azurite, IP endpoints).
    #[serde(default)]
    pub path_style: bool,
    /// Deadline for connecting to the upstream.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline for the upstream's response head.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most body bytes the gateway buffers for plugins that ask for a body.
    #[serde(default = "default_body_limit")]
    pub body_limit: ByteSize,
    /// When a response body a plugin asked for is over `body_limit`: pass it through unmasked
    /// (recorded) instead of failing with 502. Off by default: masking fails closed.
    #[serde(default)]
    pub unmasked_passthrough: bool,
    /// The plugins that decide this route's traffic, in order.
    #[serde(default)]
    pub plugins: Vec<String>,
    /// The credential the gateway presents upstream.
    #[serde(default)]
    pub credential: CredentialConfig,
}

fn default_path_prefix() -> String {
    "/".into()
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_body_limit() -> ByteSize {
    ByteSize::mib(1)
}

/// `kind = "generic" | "azure-arm" | "azure-storage"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKind {
    /// Any HTTP service: the operation is `METHOD /path`.
    #[default]
    Generic,
    /// Azure Resource Manager: the RBAC operation, e.g. `Microsoft.Compute/virtualMachines/delete`.
    AzureArm,
    /// Azure Blob Storage: the Blob service operation, e.g. `GetBlob`.
    AzureStorage,
}

/// `[route.credential]`: what the gateway presents upstream. Secrets only by file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CredentialConfig {
    /// Nothing: the client's `Authorization` is removed and nothing replaces it.
    #[default]
    None,
    /// Forward the client's own `Authorization` (only when a route says so).
    PassThrough,
    /// A static header, e.g. an API key.
    Header {
        /// Header name, e.g. `api-key`.
        name: String,
        /// File holding the value (trailing newline trimmed).
        value_file: PathBuf,
    },
    /// OAuth2 client credentials (Entra ID compatible); the token is cached until shortly
    /// before it expires.
    Oauth2ClientCredentials {
        /// Token endpoint, e.g. `https://login.microsoftonline.com/{tid}/oauth2/v2.0/token`.
        token_url: String,
        /// Client id.
        client_id: String,
        /// File holding the client secret.
        secret_file: PathBuf,
        /// Scope, e.g. `https://management.azure.com/.default`.
        scope: String,
        /// PEM CA bundle for an https token endpoint instead of the system roots.
        #[serde(default)]
        ca_file: Option<PathBuf>,
    },
    /// Azure Storage Shared Key: the gateway signs every forwarded request.
    AzureSharedKey {
        /// Storage account name.
        account: String,
        /// File holding the base64 account key.
        key_file: PathBuf,
    },
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

/// An upstream must be an absolute http(s) URL without query or fragment.
fn check_upstream(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?} must start with https:// or http://")),
    }
    match uri.authority() {
        None => return Err(format!("{url:?} has no host")),
        // Credentials belong in `[route.credential]` files, never in a URL that gets logged.
        Some(a) if a.as_str().contains('@') => {
            return Err("must not contain user information (use [route.credential])".into());
        }
        Some(_) => {}
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    Ok(())
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
        self.validate_server(&mut problem);
        self.validate_routes(&mut problem);
        problems
    }

    fn validate_server(&self, problem: &mut impl FnMut(String, String)) {
        let server = &self.server;
        match (&server.tls, server.plaintext) {
            (None, false) => problem(
                "server.tls".into(),
                "is required (or set server.plaintext = true for local development)".into(),
            ),
            (Some(_), true) => problem(
                "server.plaintext".into(),
                "cannot be true together with server.tls".into(),
            ),
            (Some(tls), false) => {
                for (field, file) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                    let file = self.path(file);
                    if !file.is_file() {
                        problem(
                            format!("server.tls.{field}"),
                            format!("{} does not exist", file.display()),
                        );
                    }
                }
            }
            (None, true) => {}
        }
        if server
            .admin_listen
            .is_some_and(|a| a == server.listen && a.port() != 0)
        {
            problem(
                "server.admin_listen".into(),
                "must differ from server.listen".into(),
            );
        }
        if server.max_header_bytes < ByteSize::kib(1) {
            problem(
                "server.max_header_bytes".into(),
                "must be at least 1KiB".into(),
            );
        }
    }

    fn validate_routes(&self, problem: &mut impl FnMut(String, String)) {
        let plugins: HashSet<&str> = self.plugins.iter().map(|p| p.name.as_str()).collect();
        let mut names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("route[{i}].{field}");
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                problem(key("name"), format!("{:?} is empty or used twice", r.name));
            }
            if !r.path_prefix.starts_with('/') {
                problem(key("path_prefix"), "must start with '/'".into());
            }
            if r.host.as_deref().is_some_and(str::is_empty) {
                problem(
                    key("host"),
                    "must not be empty (leave it out to match any host)".into(),
                );
            }
            if let Err(reason) = check_upstream(&r.upstream) {
                problem(key("upstream"), reason);
            }
            if r.path_style && r.kind != RouteKind::AzureStorage {
                problem(
                    key("path_style"),
                    "applies to kind = \"azure-storage\" only".into(),
                );
            }
            if r.connect_timeout.is_zero() {
                problem(key("connect_timeout"), "must be above 0".into());
            }
            if r.request_timeout.is_zero() {
                problem(key("request_timeout"), "must be above 0".into());
            }
            for (j, name) in r.plugins.iter().enumerate() {
                if !plugins.contains(name.as_str()) {
                    problem(
                        format!("route[{i}].plugins[{j}]"),
                        format!("no [[plugin]] is named {name:?}"),
                    );
                }
            }
            if let Some(ca) = &r.ca_file {
                let ca = self.path(ca);
                if !ca.is_file() {
                    problem(key("ca_file"), format!("{} does not exist", ca.display()));
                }
            }
            let mut file = |field: &str, f: &PathBuf| {
                let f = self.path(f);
                if !f.is_file() {
                    problem(
                        format!("route[{i}].credential.{field}"),
                        format!("{} does not exist", f.display()),
                    );
                }
            };
            match &r.credential {
                CredentialConfig::None | CredentialConfig::PassThrough => {}
                CredentialConfig::Header { value_file, .. } => file("value_file", value_file),
                CredentialConfig::Oauth2ClientCredentials {
                    secret_file,
                    ca_file,
                    ..
                } => {
                    file("secret_file", secret_file);
                    if let Some(ca) = ca_file {
                        file("ca_file", ca);
                    }
                }
                CredentialConfig::AzureSharedKey { key_file, .. } => file("key_file", key_file),
            }
        }
    }

    /// A path from the configuration, resolved against the configuration file's directory.
    pub fn path(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
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
            server = { plaintext = true }
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
    fn route_problems_are_reported_with_their_keys() {
        let dir = dir_with(&["a.wasm"]);
        let text = r#"
            plugin_dir = "plugins"
            [server]
            listen = "127.0.0.1:0"
            [[plugin]]
            name = "a"
            file = "a.wasm"
            [[route]]
            name = "r"
            path_prefix = "api"
            upstream = "ftp://example"
            plugins = ["a", "b"]
            path_style = true
            credential = { type = "azure-shared-key", account = "x", key_file = "nokey" }
            [[route]]
            name = "r"
            upstream = "http://127.0.0.1:1/base?x=1"
            [[route]]
            name = "s"
            upstream = "https://user:hunter2@example.com"
        "#;
        let Err(ConfigError::Invalid(problems)) = Config::parse(text, dir.path()) else {
            panic!("expected problems");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.tls",
                "route[0].path_prefix",
                "route[0].upstream",
                "route[0].path_style",
                "route[0].plugins[1]",
                "route[0].credential.key_file",
                "route[1].name",
                "route[1].upstream",
                "route[2].upstream",
            ]
        );
        assert!(
            !problems.iter().any(|p| p.message.contains("hunter2")),
            "{problems:?}"
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
            server = { plaintext = true }
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
