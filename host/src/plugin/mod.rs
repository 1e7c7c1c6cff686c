//! The plugin platform: WebAssembly components behind the `portcullis:policy` contract, run
//! sandboxed with deadlines and memory limits, and chained for the request path.
//!
//! - `bindings`: the one `bindgen!` of `wit/policy.wit`
//! - `engine`: the shared wasmtime engine, pooling allocator, epoch ticker, compile cache
//! - `host`: the imports a guest may call, and the locked-down WASI context
//! - `contract`: what the host checks of a component, its descriptor and its verdicts
//! - `loaded`: one loaded plugin version and how its hooks are called (fresh or reuse)
//! - `registry`: loading plugin files into a `PluginSet`
//! - `set`: the `PluginSet` and the `Chain` the request path runs
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod bindings;
mod contract;
mod engine;
mod host;
mod loaded;
mod registry;
mod set;

pub use bindings::types::{
    Approval, ByteRange, Check, Deny, Descriptor, Finding, HeaderEdit, MaskEdit, MaskPlan,
    MaskTarget, Phases, Principal, RegexTarget, Replacement, Request, RequestVerdict,
    ResponseVerdict, Strategy,
};
pub use contract::{CONTRACT, offers};
pub use engine::{EngineSettings, PluginEngine};
pub use loaded::{Held, Plugin};
pub use registry::{PluginSpec, load_plugin, load_set, load_set_reusing};
pub use set::{
    BodyWant, Chain, Exchange, PluginSet, RequestDecision, RequestOutcome, ResponseDecision,
    ResponseOutcome, Step, StepResult,
};

/// Which version of which plugin: name, version and the sha256 of its file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PluginId {
    /// Name from its descriptor (and the configuration).
    pub name: String,
    /// Version from its descriptor.
    pub version: String,
    /// Hex sha256 of the component file.
    pub sha256: String,
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.sha256.get(..12).unwrap_or(&self.sha256);
        write!(f, "{}@{} (sha256:{short})", self.name, self.version)
    }
}

/// What happens to a request when a plugin fails (trap, timeout, memory, bad verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// The request fails (the default).
    #[default]
    FailClosed,
    /// The plugin is skipped as if it allowed; the failure is still logged and recorded.
    FailOpen,
}

/// How instances are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceMode {
    /// A fresh instance for every request (the default): nothing survives to another request.
    /// The hooks of one request share its instance when the host can keep it (see `Held`).
    Fresh,
    /// Instances are kept and reused for up to `calls` calls, and dropped on any failure.
    /// For heavy guests (Python, JavaScript) whose instantiation is slow. A reused instance
    /// keeps its memory: only for plugins that keep no request data in globals.
    Reuse {
        /// Calls an instance serves before it is recycled.
        calls: u32,
    },
}

/// How one plugin runs: limits, failure policy, instance mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSettings {
    /// Deadline for one hook call.
    pub timeout: Duration,
    /// Linear memory limit per instance, bytes.
    pub memory_limit: u64,
    /// What a failure does to the request.
    pub failure: FailurePolicy,
    /// Fresh or reused instances.
    pub instance: InstanceMode,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            timeout: Duration::from_millis(50),
            memory_limit: 64 << 20,
            failure: FailurePolicy::FailClosed,
            instance: InstanceMode::Fresh,
        }
    }
}

/// A hook of the contract, to say where a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `describe`
    Describe,
    /// `configure`
    Configure,
    /// `on-request`
    OnRequest,
    /// `on-request-body`
    OnRequestBody,
    /// `on-response`
    OnResponse,
    /// `on-response-body`
    OnResponseBody,
}

impl Hook {
    /// The export's name in the contract (wit/), as logs and audit records give it.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Describe => "describe",
            Hook::Configure => "configure",
            Hook::OnRequest => "on-request",
            Hook::OnRequestBody => "on-request-body",
            Hook::OnResponse => "on-response",
            Hook::OnResponseBody => "on-response-body",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A plugin could not be loaded, or a call into it failed. Every variant names the plugin
/// (its file when loading, its name, version and sha256 once known).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine itself could not be built.
    #[error("plugin engine: {0}")]
    Engine(String),
    /// The plugin file could not be read.
    #[error("plugin file {file}: {reason}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        reason: String,
    },
    /// The file is not a valid component.
    #[error("plugin file {file}: not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The component was built for another contract version.
    #[error(
        "plugin file {file}: built for contract {found}, but this gateway speaks {}",
        contract::CONTRACT
    )]
    ContractVersion {
        /// The file.
        file: String,
        /// The contract it exports.
        found: String,
    },
    /// The component does not implement the contract.
    #[error(
        "plugin file {file}: does not implement {}: {reason}",
        contract::CONTRACT
    )]
    Contract {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The component imports something the sandbox does not provide.
    #[error("plugin file {file}: imports something the sandbox does not provide: {reason}")]
    Link {
        /// The file.
        file: String,
        /// Wasmtime's explanation.
        reason: String,
    },
    /// The descriptor breaks the contract, or disagrees with the configuration.
    #[error("plugin {plugin}: describe: {reason}")]
    Describe {
        /// File and sha256 (the name is not trusted yet).
        plugin: String,
        /// Every problem found.
        reason: String,
    },
    /// `configure` refused the operator's configuration.
    #[error("plugin {plugin}: configure refused the configuration: {reason}")]
    Configure {
        /// The plugin.
        plugin: Arc<PluginId>,
        /// The plugin's message.
        reason: String,
    },
    /// A call ran past its deadline.
    #[error("plugin {plugin}: {hook}: timed out after {timeout:?}")]
    Timeout {
        /// The plugin.
        plugin: Arc<PluginId>,
        /// The hook.
        hook: Hook,
        /// The deadline.
        timeout: Duration,
    },
    /// A call tried to grow memory past the plugin's limit.
    #[error("plugin {plugin}: {hook}: exceeded its memory limit of {limit} bytes")]
    Memory {
        /// The plugin.
        plugin: Arc<PluginId>,
        /// The hook.
        hook: Hook,
        /// The limit.
        limit: u64,
    },
    /// A call trapped (panic, `unreachable`, bad host call, …).
    #[error("plugin {plugin}: {hook}: trapped: {reason}")]
    Trap {
        /// The plugin.
        plugin: Arc<PluginId>,
        /// The hook.
        hook: Hook,
        /// The trap.
        reason: String,
    },
    /// A call returned a verdict outside the contract.
    #[error("plugin {plugin}: {hook}: invalid verdict: {reason}")]
    Verdict {
        /// The plugin.
        plugin: Arc<PluginId>,
        /// The hook.
        hook: Hook,
        /// What was wrong.
        reason: String,
    },
    /// No instance could be created (the pool is exhausted).
    #[error("plugin {plugin}: {hook}: no instance available: {reason}")]
    Capacity {
        /// The plugin.
        plugin: Arc<PluginId>,
        /// The hook.
        hook: Hook,
        /// Wasmtime's explanation.
        reason: String,
    },
    /// A body was larger than the limit the plugin asked for.
    #[error("plugin {plugin}: body of {size} bytes is over the {limit} bytes it asked for")]
    BodyTooLarge {
        /// The plugin.
        plugin: Arc<PluginId>,
        /// Body size.
        size: u64,
        /// Requested limit.
        limit: u64,
    },
    /// A chain named a plugin the set does not have.
    #[error("no plugin named {0:?} is loaded")]
    Unknown(String),
}

impl PluginError {
    /// The plugin a call failure is about, when known.
    pub fn plugin(&self) -> Option<&Arc<PluginId>> {
        match self {
            PluginError::Configure { plugin, .. }
            | PluginError::Timeout { plugin, .. }
            | PluginError::Memory { plugin, .. }
            | PluginError::Trap { plugin, .. }
            | PluginError::Verdict { plugin, .. }
            | PluginError::Capacity { plugin, .. }
            | PluginError::BodyTooLarge { plugin, .. } => Some(plugin),
            _ => None,
        }
    }
}
