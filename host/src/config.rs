//! The configuration file: serde structs (unknown keys refused) and `validate()`, which
//! reports every problem at once, each with its TOML key path.
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

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
    /// The identity providers whose tokens the gateway accepts, `[[identity_provider]]` tables.
    #[serde(default, rename = "identity_provider")]
    pub identity_providers: Vec<IdentityProviderConfig>,
    /// The routes, `[[route]]` tables, tried in order; the first match serves the request.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// How the host masks response bodies.
    #[serde(default)]
    pub masking: MaskingConfig,
    /// Hot reload of plugins and policy.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// The signed audit log. Unset: no audit log (the gateway warns at start).
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// Session recordings (HAR). Unset: none.
    #[serde(default)]
    pub sessions: Option<SessionsConfig>,
    /// Just-in-time approvals. Unset: a request a plugin holds for approval is refused (403).
    #[serde(default)]
    pub approvals: Option<ApprovalsConfig>,
    /// The file this configuration was read from (set by `load`; none when parsed from text).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The hex SHA-256 of the exact bytes `load` parsed: the audit log's `config_sha256`, and
    /// how a reload tells an unchanged file.
    #[serde(skip)]
    pub source_sha256: Option<String>,
    /// The directory of the configuration file, for relative paths (set by `load`).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[reload]`: hot reload of plugins and policy while the gateway serves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the plugin directory and the configuration file's directory, and reload when a
    /// file lands there (a reload can also be asked for through the admin API).
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Wait this long after the last change before reloading, so a file being written, or
    /// several landing together, give one reload.
    #[serde(default = "default_debounce", with = "humantime_serde")]
    pub debounce: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            debounce: default_debounce(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_debounce() -> Duration {
    Duration::from_millis(200)
}

/// `[audit]`: the signed, tamper-evident audit log.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The log directory (segments, checkpoints, quarantine), relative to the configuration file.
    pub dir: PathBuf,
    /// The log's origin: a unique name for this log (one per gateway instance), e.g.
    /// `portcullis.example.com/prod-1`. It is the name the signing key signs as.
    pub origin: String,
    /// The Ed25519 signing key (PKCS#8 PEM, mode 0600) from `portcullis keygen`.
    pub signing_key_file: PathBuf,
    /// The previous signing key, for the one start that rotates keys: the log records the
    /// rotation and signs one checkpoint with both keys.
    #[serde(default)]
    pub retiring_key_file: Option<PathBuf>,
    /// `batched` (default): a request's decision record is written to the operating system
    /// before forwarding and fsync'ed within `fsync_interval`; `strict`: fsync'ed before
    /// forwarding. Gateway events (start, stop, configuration, key) are always fsync'ed.
    #[serde(default)]
    pub durability: AuditDurability,
    /// The longest a batched record waits for its fsync (what a power loss can cost).
    #[serde(default = "default_fsync_interval", with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// When a decision record cannot be written: `deny` (default: 503) or `allow-and-alert`.
    #[serde(default)]
    pub on_failure: OnAuditFailure,
    /// Start a new segment past this size.
    #[serde(default = "default_segment_size")]
    pub segment_size: ByteSize,
    /// Start a new segment past this age.
    #[serde(default = "default_segment_age", with = "humantime_serde")]
    pub segment_age: Duration,
    /// Write a heartbeat record this often (a verifier flags a log whose last record is older
    /// than two heartbeats and is not a stop: the tail may have been cut).
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
}

/// `audit.durability`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditDurability {
    /// Decision records are fsync'ed before forwarding.
    Strict,
    /// Decision records are written before forwarding, fsync'ed within `fsync_interval`.
    #[default]
    Batched,
}

/// `audit.on_failure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnAuditFailure {
    /// Refuse the request with 503.
    #[default]
    Deny,
    /// Forward it anyway and log an alert.
    AllowAndAlert,
}

fn default_fsync_interval() -> Duration {
    Duration::from_millis(100)
}

fn default_segment_size() -> ByteSize {
    ByteSize::mib(64)
}

fn default_segment_age() -> Duration {
    Duration::from_secs(3600)
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(60)
}

/// `[sessions]`: recordings of request/response pairs as HAR.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// The recordings directory, relative to the configuration file.
    pub dir: PathBuf,
    /// Bodies larger than this are stored once as content-addressed blobs.
    #[serde(default = "default_blob_threshold")]
    pub blob_threshold: ByteSize,
    /// Bodies larger than this are not stored: only their size and SHA-256.
    #[serde(default = "default_recorded_body")]
    pub max_body: ByteSize,
}

fn default_blob_threshold() -> ByteSize {
    ByteSize::kib(64)
}

fn default_recorded_body() -> ByteSize {
    ByteSize::mib(16)
}

/// `[approvals]`: requests a plugin holds for a human's approval.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// The SQLite file of approval requests and grants, relative to the configuration file.
    pub store: PathBuf,
    /// The `[[identity_provider]]` whose tokens approvers present to the admin API.
    pub identity_provider: String,
    /// How long a request waits for a decision before it expires.
    #[serde(default = "default_request_ttl", with = "humantime_serde")]
    pub request_ttl: Duration,
    /// How long an approval lets the identical request through (once).
    #[serde(default = "default_grant_ttl", with = "humantime_serde")]
    pub grant_ttl: Duration,
    /// The longest window an approver may grant a scope for.
    #[serde(default = "default_max_scope", with = "humantime_serde")]
    pub max_scope: Duration,
    /// `Retry-After` of the answer to a request whose hold budget ran out.
    #[serde(default = "default_retry_after", with = "humantime_serde")]
    pub retry_after: Duration,
    /// The admin listener's address as approvers reach it, for links in notifications;
    /// unset: `http://` + `server.admin_listen`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Where new requests are announced, `[[approvals.webhook]]` tables.
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
}

fn default_request_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn default_grant_ttl() -> Duration {
    Duration::from_secs(900)
}

fn default_max_scope() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_retry_after() -> Duration {
    Duration::from_secs(30)
}

/// `[[approvals.webhook]]`: where approval requests are announced.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the webhook in logs, the audit log and the store.
    pub name: String,
    /// `https://…` (or `http://…` for a receiver on loopback).
    pub url: String,
    /// Payload shape: `json` (default), `slack` or `teams`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Only requests on these routes; empty: every route.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Only requests any of these approver groups may approve; empty: all.
    #[serde(default)]
    pub approver_groups: Vec<String>,
    /// Deliveries tried before giving up (first try included).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each retry, at most 1 minute.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Deadline of one delivery attempt.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM CA bundle for an https receiver instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// File holding a shared secret: each delivery carries
    /// `X-Portcullis-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

/// `approvals.webhook.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"type": "approval.requested", "approval": {…}}`.
    #[default]
    Json,
    /// A Slack incoming-webhook message.
    Slack,
    /// A Microsoft Teams message with an Adaptive Card.
    Teams,
}

fn default_attempts() -> u32 {
    5
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[masking]`: settings of the host's mask executor.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// A file holding the key of the `hash` mask strategy (at least 32 bytes; a trailing line
    /// end is ignored), relative to the configuration file. Unset: a plan that hashes fails
    /// closed (502). The key makes masked values correlate without revealing them: keep it
    /// secret and stable (a new key changes every hashed value).
    #[serde(default)]
    pub hash_key_file: Option<PathBuf>,
}

/// `[engine]`: limits shared by every plugin.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    /// The admin listener (`/healthz`, `/readyz`, `/plugins`, `/reload`, and the approvers'
    /// API); unset: none.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// A file holding the bearer token that the admin listener's operator endpoints
    /// (`/plugins`, `/reload`) require. Unset: they answer only clients connecting from a
    /// loopback address, and refuse every other client with 403.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
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
            admin_token_file: None,
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    /// `required` (default): every request carries a verified token and is admitted by an
    /// `[[route.access]]` rule; `none`: reachable without a token, said explicitly.
    #[serde(default)]
    pub authentication: Authentication,
    /// The identity providers whose tokens this route accepts; empty: all of them.
    #[serde(default)]
    pub identity_providers: Vec<String>,
    /// Who may use the route, and with which plugins: the first rule matching the caller
    /// decides; no rule matches: 403.
    #[serde(default)]
    pub access: Vec<AccessConfig>,
    /// The longest the gateway holds a request waiting for a human's approval (a plugin's
    /// budget is capped by it); then the client gets the approval id to retry with.
    #[serde(default = "default_approval_hold", with = "humantime_serde")]
    pub approval_hold: Duration,
}

fn default_approval_hold() -> Duration {
    Duration::from_secs(60)
}

/// `authentication = "required" | "none"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Authentication {
    /// A verified token from one of the route's identity providers.
    #[default]
    Required,
    /// No token needed: the route is open to anyone who can reach the gateway.
    None,
}

/// `[[route.access]]`: which identities a rule admits, and the plugins their traffic goes
/// through. Within a list any value matches; across lists all must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Names the rule in logs and errors.
    pub name: String,
    /// Identity providers (by name) whose callers match.
    #[serde(default)]
    pub identity_providers: Vec<String>,
    /// Subjects (the provider's `subject_claim`).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Tenants (`tid`).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Client applications (`azp` or `appid`).
    #[serde(default)]
    pub app_ids: Vec<String>,
    /// App roles (`roles`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Group ids (`groups`). Never matches a token whose groups were elided (group overage).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Delegated scopes (`scp`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The plugins for this rule's callers, in order; unset: the route's `plugins`.
    #[serde(default)]
    pub plugins: Option<Vec<String>>,
}

impl AccessConfig {
    /// Does the rule name no condition at all?
    pub fn is_unconditional(&self) -> bool {
        [
            &self.identity_providers,
            &self.subjects,
            &self.tenants,
            &self.app_ids,
            &self.roles,
            &self.groups,
            &self.scopes,
        ]
        .iter()
        .all(|l| l.is_empty())
    }
}

/// `[[identity_provider]]`: an OIDC issuer (Entra ID or any other) whose access tokens the
/// gateway verifies against the issuer's published keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderConfig {
    /// Unique name; routes and access rules refer to it.
    pub name: String,
    /// The exact `iss` of its tokens. `{tenantid}` stands for the token's `tid` (Entra ID
    /// multi-tenant), which must then be in `tenants`.
    pub issuer: String,
    /// Accepted `aud` values; a token must carry one of them.
    pub audiences: Vec<String>,
    /// The OIDC discovery document; unset: `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// The JWKS, instead of discovery.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Accepted signature algorithms: RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Tolerance for `exp` and `nbf`.
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Claims every token must carry (besides `iss`, `aud`, `exp` and the subject).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Tenants (`tid`) accepted; empty: any (only for an issuer without `{tenantid}`).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// The claim naming the caller: `sub` (default) or, for Entra ID, `oid`.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Extra claims handed to plugins and the audit log (as text).
    #[serde(default)]
    pub claims: Vec<String>,
    /// PEM CA bundle for an https issuer instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How often the keys are fetched again.
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// The least time between two fetches triggered by unknown `kid`s (a flood of made-up
    /// `kid`s costs the IdP one fetch per interval).
    #[serde(default = "default_refresh_min_interval", with = "humantime_serde")]
    pub refresh_min_interval: Duration,
    /// Larger tokens are refused before any parsing or cryptography.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: ByteSize,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}

fn default_clock_skew() -> Duration {
    Duration::from_secs(60)
}

fn default_subject_claim() -> String {
    "sub".into()
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_refresh_min_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_max_token_bytes() -> ByteSize {
    ByteSize::kib(16)
}

/// Signature algorithms a provider may accept: asymmetric only. `none` and the HMAC family
/// are never accepted (an HMAC "secret" would be a public key anyone can fetch).
pub const TOKEN_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// The placeholder for the token's tenant in a multi-tenant issuer.
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

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
    /// The name the plugin declares; routes refer to it by this name unless `alias` is set.
    pub name: String,
    /// The name routes and access rules use for this plugin with this configuration, so one
    /// plugin can be loaded several times with different configurations (e.g. one per
    /// identity: masking everything for agents, less for auditors).
    #[serde(default)]
    pub alias: Option<String>,
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
    /// `fresh` (default): a new instance per request; `reuse`: instances serve `reuse_calls`
    /// calls.
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
    /// A new instance per request, shared by that request's hooks when the pool allows.
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

/// An absolute http(s) URL with a host, no user information (secrets belong in files, never
/// in a URL that gets logged) and no fragment; a query only where `query` allows it.
fn check_url(url: &str, query: bool) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?} must start with https:// or http://")),
    }
    match uri.authority() {
        None => return Err(format!("{url:?} has no host")),
        Some(a) if a.as_str().contains('@') => {
            return Err("must not contain user information (secrets go in files)".into());
        }
        Some(_) => {}
    }
    if url.contains('#') || (!query && uri.query().is_some()) {
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
        let bytes = std::fs::read(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Config::from_file_bytes(path, &bytes)
    }

    /// `load`, from the bytes already read from `path`: the one read whose digest is recorded.
    pub fn from_file_bytes(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: format!("not UTF-8: {e}"),
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut config = Config::parse(text, &base_dir).map_err(|e| match e {
            ConfigError::Parse { reason, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })?;
        config.source = Some(path.to_path_buf());
        config.source_sha256 = Some(hex::encode(Sha256::digest(bytes)));
        Ok(config)
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
            let known_as = p.alias.as_deref().unwrap_or(&p.name);
            if !names.insert(known_as) {
                let field = if p.alias.is_some() { "alias" } else { "name" };
                problem(
                    key(field),
                    format!("{known_as:?} is loaded twice (give each configuration an alias)"),
                );
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
        if let Some(f) = &self.masking.hash_key_file
            && !self.path(f).is_file()
        {
            problem(
                "masking.hash_key_file".into(),
                format!("{} does not exist", self.path(f).display()),
            );
        }
        if let Some(audit) = &self.audit {
            self.validate_audit(audit, &mut problem);
        }
        if let Some(approvals) = &self.approvals {
            self.validate_approvals(approvals, &mut problem);
        }
        self.validate_server(&mut problem);
        self.validate_identity_providers(&mut problem);
        self.validate_routes(&mut problem);
        problems
    }

    fn validate_approvals(
        &self,
        approvals: &ApprovalsConfig,
        problem: &mut impl FnMut(String, String),
    ) {
        if self.server.admin_listen.is_none() {
            problem(
                "approvals".into(),
                "needs server.admin_listen: approvers decide through the admin listener".into(),
            );
        }
        if !self
            .identity_providers
            .iter()
            .any(|p| p.name == approvals.identity_provider)
        {
            problem(
                "approvals.identity_provider".into(),
                format!(
                    "no [[identity_provider]] is named {:?}",
                    approvals.identity_provider
                ),
            );
        }
        for (key, value) in [
            ("request_ttl", approvals.request_ttl),
            ("grant_ttl", approvals.grant_ttl),
            ("max_scope", approvals.max_scope),
        ] {
            if value.is_zero() {
                problem(format!("approvals.{key}"), "must be above 0".into());
            }
        }
        if let Some(url) = &approvals.public_url
            && let Err(reason) = check_url(url, false)
        {
            problem("approvals.public_url".into(), reason);
        }
        let mut names = HashSet::new();
        for (i, hook) in approvals.webhooks.iter().enumerate() {
            let key = |field: &str| format!("approvals.webhook[{i}].{field}");
            if hook.name.is_empty() || !names.insert(hook.name.as_str()) {
                problem(
                    key("name"),
                    format!("{:?} is empty or used twice", hook.name),
                );
            }
            // A webhook URL is a credential (Slack, Teams): never echoed.
            if check_url(&hook.url, true).is_err() {
                problem(
                    key("url"),
                    "must be an http(s) URL with a host, without user information or fragment"
                        .into(),
                );
            }
            if hook.max_attempts == 0 {
                problem(key("max_attempts"), "must be at least 1".into());
            }
            if hook.timeout.is_zero() {
                problem(key("timeout"), "must be above 0".into());
            }
            for (field, file) in [
                ("ca_file", &hook.ca_file),
                ("secret_file", &hook.secret_file),
            ] {
                if let Some(file) = file
                    && !self.path(file).is_file()
                {
                    problem(
                        key(field),
                        format!("{} does not exist", self.path(file).display()),
                    );
                }
            }
            for (j, route) in hook.routes.iter().enumerate() {
                if !self.routes.iter().any(|r| &r.name == route) {
                    problem(
                        format!("approvals.webhook[{i}].routes[{j}]"),
                        format!("no [[route]] is named {route:?}"),
                    );
                }
            }
        }
    }

    fn validate_audit(&self, audit: &AuditConfig, problem: &mut impl FnMut(String, String)) {
        if audit.origin.is_empty()
            || audit.origin.contains(char::is_whitespace)
            || audit.origin.contains('+')
        {
            problem(
                "audit.origin".into(),
                "must be a non-empty name without spaces or '+' (e.g. gateway.example.com/prod-1)"
                    .into(),
            );
        }
        for (key, file) in [
            ("signing_key_file", Some(&audit.signing_key_file)),
            ("retiring_key_file", audit.retiring_key_file.as_ref()),
        ] {
            if let Some(f) = file
                && !self.path(f).is_file()
            {
                problem(
                    format!("audit.{key}"),
                    format!(
                        "{} does not exist (create one with `portcullis keygen`)",
                        self.path(f).display()
                    ),
                );
            }
        }
        if audit.fsync_interval.is_zero() || audit.fsync_interval > Duration::from_secs(10) {
            problem(
                "audit.fsync_interval".into(),
                "must be between 1ms and 10s".into(),
            );
        }
        if audit.segment_size < ByteSize::kib(64) {
            problem("audit.segment_size".into(), "must be at least 64KiB".into());
        }
        if audit.segment_age < Duration::from_secs(1) {
            problem("audit.segment_age".into(), "must be at least 1s".into());
        }
        if audit.heartbeat < Duration::from_millis(100) {
            problem("audit.heartbeat".into(), "must be at least 100ms".into());
        }
    }

    fn validate_identity_providers(&self, problem: &mut impl FnMut(String, String)) {
        let mut names = HashSet::new();
        for (i, p) in self.identity_providers.iter().enumerate() {
            let key = |field: &str| format!("identity_provider[{i}].{field}");
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                problem(key("name"), format!("{:?} is empty or used twice", p.name));
            }
            let templated = p.issuer.contains(TENANT_PLACEHOLDER);
            if let Err(reason) = check_url(&p.issuer.replace(TENANT_PLACEHOLDER, "t"), true) {
                problem(key("issuer"), reason);
            }
            if templated && p.tenants.is_empty() {
                problem(
                    key("tenants"),
                    format!(
                        "must list the accepted tenants when the issuer has {TENANT_PLACEHOLDER}"
                    ),
                );
            }
            if templated && p.discovery_url.is_none() && p.jwks_uri.is_none() {
                problem(
                    key("discovery_url"),
                    format!(
                        "is required when the issuer has {TENANT_PLACEHOLDER} (or set jwks_uri)"
                    ),
                );
            }
            match (&p.discovery_url, &p.jwks_uri) {
                (Some(_), Some(_)) => problem(
                    key("jwks_uri"),
                    "set either discovery_url or jwks_uri, not both".into(),
                ),
                (Some(url), None) => {
                    if let Err(reason) = check_url(url, true) {
                        problem(key("discovery_url"), reason);
                    }
                }
                (None, Some(url)) => {
                    if let Err(reason) = check_url(url, true) {
                        problem(key("jwks_uri"), reason);
                    }
                }
                (None, None) => {}
            }
            if p.audiences.is_empty() || p.audiences.iter().any(String::is_empty) {
                problem(
                    key("audiences"),
                    "must list at least one non-empty audience".into(),
                );
            }
            if p.algorithms.is_empty() {
                problem(key("algorithms"), "must list at least one algorithm".into());
            }
            for (j, alg) in p.algorithms.iter().enumerate() {
                if !TOKEN_ALGORITHMS.contains(&alg.as_str()) {
                    problem(
                        format!("identity_provider[{i}].algorithms[{j}]"),
                        format!(
                            "{alg:?} is not accepted; use one of {} (asymmetric only: never none or HS*)",
                            TOKEN_ALGORITHMS.join(", ")
                        ),
                    );
                }
            }
            if p.clock_skew > Duration::from_secs(300) {
                problem(key("clock_skew"), "must be at most 5m".into());
            }
            if p.subject_claim.is_empty() {
                problem(key("subject_claim"), "must not be empty".into());
            }
            if p.refresh_interval < Duration::from_secs(1) {
                problem(key("refresh_interval"), "must be at least 1s".into());
            }
            if p.max_token_bytes < ByteSize::kib(1) || p.max_token_bytes > ByteSize::kib(64) {
                problem(
                    key("max_token_bytes"),
                    "must be between 1KiB and 64KiB".into(),
                );
            }
            if let Some(ca) = &p.ca_file {
                let ca = self.path(ca);
                if !ca.is_file() {
                    problem(key("ca_file"), format!("{} does not exist", ca.display()));
                }
            }
        }
    }

    fn validate_access(
        &self,
        i: usize,
        r: &RouteConfig,
        plugins: &HashSet<&str>,
        problem: &mut impl FnMut(String, String),
    ) {
        let providers: HashSet<&str> = self
            .identity_providers
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let mut provider_names = |key: String, names: &[String]| {
            for (j, name) in names.iter().enumerate() {
                if !providers.contains(name.as_str()) {
                    problem(
                        format!("{key}[{j}]"),
                        format!("no [[identity_provider]] is named {name:?}"),
                    );
                }
            }
        };
        provider_names(
            format!("route[{i}].identity_providers"),
            &r.identity_providers,
        );
        for (k, rule) in r.access.iter().enumerate() {
            provider_names(
                format!("route[{i}].access[{k}].identity_providers"),
                &rule.identity_providers,
            );
        }
        match r.authentication {
            Authentication::None => {
                if !r.access.is_empty() || !r.identity_providers.is_empty() {
                    problem(
                        format!("route[{i}].authentication"),
                        "is \"none\": the route cannot have access rules or identity providers"
                            .into(),
                    );
                }
            }
            Authentication::Required => {
                if self.identity_providers.is_empty() {
                    problem(
                        format!("route[{i}].authentication"),
                        "requires a verified token, but no [[identity_provider]] is configured \
                         (configure one, or set authentication = \"none\" to open the route)"
                            .into(),
                    );
                }
                if r.access.is_empty() {
                    problem(
                        format!("route[{i}].access"),
                        "no rule admits anyone: add a [[route.access]] rule, or set \
                         authentication = \"none\" to open the route"
                            .into(),
                    );
                }
            }
        }
        for (k, rule) in r.access.iter().enumerate() {
            let key = |field: &str| format!("route[{i}].access[{k}].{field}");
            if rule.name.is_empty() {
                problem(key("name"), "must not be empty".into());
            }
            if rule.is_unconditional() {
                problem(
                    key("name"),
                    "names no condition; to admit every caller of a provider, list it in identity_providers"
                        .into(),
                );
            }
            for (j, name) in rule.plugins.iter().flatten().enumerate() {
                if !plugins.contains(name.as_str()) {
                    problem(
                        format!("route[{i}].access[{k}].plugins[{j}]"),
                        format!("no [[plugin]] is named {name:?}"),
                    );
                }
            }
        }
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
        if let Some(file) = &server.admin_token_file {
            let file = self.path(file);
            if server.admin_listen.is_none() {
                problem(
                    "server.admin_token_file".into(),
                    "has no effect without server.admin_listen".into(),
                );
            } else if !file.is_file() {
                problem(
                    "server.admin_token_file".into(),
                    format!("{} does not exist", file.display()),
                );
            }
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
        let plugins: HashSet<&str> = self
            .plugins
            .iter()
            .map(|p| p.alias.as_deref().unwrap_or(&p.name))
            .collect();
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
            if let Err(reason) = check_url(&r.upstream, false) {
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
            self.validate_access(i, r, &plugins, problem);
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
                alias: p.alias.clone(),
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

    /// The digest the audit log records is of the bytes parsed, read once.
    #[test]
    fn load_records_the_sha256_of_the_bytes_it_parsed() {
        let dir = dir_with(&[]);
        let path = dir.path().join("portcullis.toml");
        let text = "plugin_dir = \"plugins\"\nserver = { plaintext = true }\n";
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.source_sha256.as_deref(),
            Some(hex::encode(Sha256::digest(text.as_bytes())).as_str())
        );
        assert_eq!(config.source.as_deref(), Some(path.as_path()));
        let error = Config::from_file_bytes(&path, b"plugin_dir = \"\xff\"").unwrap_err();
        assert!(error.to_string().contains("not UTF-8"), "{error}");
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
    fn an_admin_token_file_must_exist_and_needs_an_admin_listener() {
        let dir = dir_with(&[]);
        let problems = |server: &str| {
            let text = format!("plugin_dir = \"plugins\"\n[server]\nplaintext = true\n{server}");
            match Config::parse(&text, dir.path()) {
                Err(ConfigError::Invalid(problems)) => problems
                    .iter()
                    .map(|p| format!("{}: {}", p.key, p.message))
                    .collect::<Vec<_>>(),
                Ok(_) => Vec::new(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(
            problems("admin_token_file = \"admin.token\""),
            ["server.admin_token_file: has no effect without server.admin_listen"]
        );
        let missing =
            problems("admin_listen = \"127.0.0.1:0\"\nadmin_token_file = \"admin.token\"");
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].starts_with("server.admin_token_file: ")
                && missing[0].ends_with("admin.token does not exist"),
            "{missing:?}"
        );
        std::fs::write(dir.path().join("admin.token"), "t\n").unwrap();
        assert!(
            problems("admin_listen = \"127.0.0.1:0\"\nadmin_token_file = \"admin.token\"")
                .is_empty()
        );
    }

    #[test]
    fn approvals_problems_are_reported_and_a_webhook_url_is_never_echoed() {
        let dir = dir_with(&[]);
        let text = r#"
            plugin_dir = "plugins"
            server = { plaintext = true }
            [approvals]
            store = "approvals.db"
            identity_provider = "nobody"
            grant_ttl = "0s"
            [[approvals.webhook]]
            name = "chat"
            url = "https://user:pw@hooks.example/services/T0/SECRET#x"
            max_attempts = 0
            routes = ["missing"]
            [[approvals.webhook]]
            name = "chat"
            url = "https://hooks.example/ok"
            secret_file = "no-such-file"
        "#;
        let Err(ConfigError::Invalid(problems)) = Config::parse(text, dir.path()) else {
            panic!("expected problems");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "approvals",
                "approvals.identity_provider",
                "approvals.grant_ttl",
                "approvals.webhook[0].url",
                "approvals.webhook[0].max_attempts",
                "approvals.webhook[0].routes[0]",
                "approvals.webhook[1].name",
                "approvals.webhook[1].secret_file",
            ]
        );
        let text = format!("{problems:?}");
        assert!(!text.contains("SECRET") && !text.contains("pw@"), "{text}");
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
            authentication = "none"
            name = "r"
            path_prefix = "api"
            upstream = "ftp://example"
            plugins = ["a", "b"]
            path_style = true
            credential = { type = "azure-shared-key", account = "x", key_file = "nokey" }
            [[route]]
            authentication = "none"
            name = "r"
            upstream = "http://127.0.0.1:1/base?x=1"
            [[route]]
            authentication = "none"
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
    fn routes_need_identity_and_access_rules_unless_explicitly_open() {
        let dir = dir_with(&["a.wasm"]);
        let text = r#"
            plugin_dir = "plugins"
            server = { plaintext = true }
            [[route]]
            name = "default-deny"
            upstream = "http://127.0.0.1:1"
            [[route]]
            name = "open"
            upstream = "http://127.0.0.1:1"
            authentication = "none"
        "#;
        let Err(ConfigError::Invalid(problems)) = Config::parse(text, dir.path()) else {
            panic!("expected problems");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["route[0].authentication", "route[0].access"]);
    }

    #[test]
    fn identity_problems_are_reported_with_their_keys() {
        let dir = dir_with(&["a.wasm"]);
        let text = r#"
            plugin_dir = "plugins"
            server = { plaintext = true }
            [[plugin]]
            name = "a"
            file = "a.wasm"
            [[identity_provider]]
            name = "entra"
            issuer = "https://login.microsoftonline.com/{tenantid}/v2.0"
            audiences = []
            algorithms = ["RS256", "HS256", "none"]
            clock_skew = "1h"
            [[identity_provider]]
            name = "entra"
            issuer = "ftp://idp"
            audiences = ["api://x"]
            discovery_url = "https://idp/.well-known/openid-configuration"
            jwks_uri = "https://idp/keys"
            [[route]]
            name = "r"
            upstream = "http://127.0.0.1:1"
            identity_providers = ["nope"]
            [[route.access]]
            name = "everyone"
            plugins = ["b"]
            [[route]]
            name = "open"
            upstream = "http://127.0.0.1:1"
            authentication = "none"
            [[route.access]]
            name = "agents"
            roles = ["agent"]
        "#;
        let Err(ConfigError::Invalid(problems)) = Config::parse(text, dir.path()) else {
            panic!("expected problems");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "identity_provider[0].tenants",
                "identity_provider[0].discovery_url",
                "identity_provider[0].audiences",
                "identity_provider[0].algorithms[1]",
                "identity_provider[0].algorithms[2]",
                "identity_provider[0].clock_skew",
                "identity_provider[1].name",
                "identity_provider[1].issuer",
                "identity_provider[1].jwks_uri",
                "route[0].identity_providers[0]",
                "route[0].access[0].name",
                "route[0].access[0].plugins[0]",
                "route[1].authentication",
            ]
        );
        let hs = &problems[3].message;
        assert!(hs.contains("never none or HS*"), "{hs}");
    }

    #[test]
    fn one_plugin_loads_twice_under_aliases() {
        let dir = dir_with(&["a.wasm"]);
        let text = r#"
            plugin_dir = "plugins"
            server = { plaintext = true }
            [[plugin]]
            name = "a"
            alias = "a-strict"
            file = "a.wasm"
            [[plugin]]
            name = "a"
            alias = "a-lenient"
            file = "a.wasm"
            [[plugin]]
            name = "a"
            alias = "a-lenient"
            file = "a.wasm"
        "#;
        let Err(ConfigError::Invalid(problems)) = Config::parse(text, dir.path()) else {
            panic!("expected problems");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["plugin[2].alias"]);
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
