//! Portcullis: a Layer-7, identity-aware gateway whose policy runs in sandboxed WebAssembly
//! components behind one WIT contract (`wit/policy.wit`).
//!
//! Module map (more arrive with the request path, identity, audit and approvals):
//! - [`cli`]: the command line
//! - [`check`]: `portcullis check`: validate the configuration and load every plugin
//! - [`codec`]: Content-Encoding of bodies the host reads or rewrites (gzip, deflate, br)
//! - [`config`]: the TOML configuration and its validation
//! - [`credential`]: the upstream credentials the gateway holds and sets on forwarded requests
//! - [`mask`]: host-native execution of plugins' mask plans on response bodies
//! - [`operation`]: the normalized `operation` string plugins see, per route kind
//! - [`plugin`]: the plugin platform: engine, sandbox, contract checks, plugin sets and chains
//!
//! The request pipeline the plugin chain serves (one straight line in `proxy::handle`, to come):
//! context → authenticate → snapshot the `PluginSet` → request phase (`Chain::on_request`,
//! `Chain::on_request_body`) → approval → forward → response phase (`Chain::on_response`,
//! `Chain::on_response_body`, mask plans executed natively) → session + audit on every exit.
pub mod check;
pub mod cli;
pub mod codec;
pub mod config;
pub mod credential;
pub mod mask;
pub mod operation;
pub mod plugin;
