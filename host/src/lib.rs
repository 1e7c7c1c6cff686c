//! Portcullis: a Layer-7, identity-aware gateway whose policy runs in sandboxed WebAssembly
//! components behind one WIT contract (`wit/policy.wit`).
//!
//! Module map (more arrive with audit and approvals):
//! - [`audit`]: what the gateway records in its signed audit log (the log itself is the
//!   `portcullis-audit` crate)
//! - [`cli`]: the command line
//! - [`check`]: `portcullis check`: validate the configuration, load every plugin, set up every
//!   route's upstream and the TLS certificate
//! - [`config`]: the TOML configuration and its validation
//! - [`server`]: the listeners (TLS, HTTP/1.1 and HTTP/2, admin) and graceful drain
//! - [`gateway`]: the state a request needs: plugin set and routes, built from the config
//! - [`route`]: what a route serves and how it matches
//! - [`proxy`]: `handle()`, the one straight line of a request's phases
//! - [`auth`]: bearer tokens verified against identity providers' keys, the caller's
//!   `Principal`, and the routes' access rules
//! - [`operation`]: the normalized `operation` string plugins see, per route kind
//! - [`upstream`]: the upstream client, hop-by-hop stripping, `forward()`
//! - [`credential`]: the upstream credentials the gateway holds and sets on forwarded requests
//! - [`codec`]: Content-Encoding of bodies the host reads or rewrites (gzip, deflate, br)
//! - [`mask`]: host-native execution of plugins' mask plans on response bodies
//! - [`error`]: `GatewayError` and the one mapping of failures and denies to responses
//! - [`plugin`]: the plugin platform: engine, sandbox, contract checks, plugin sets and chains
//!
//! The request pipeline, in `proxy::handle`: context and route → authenticate
//! (`Identity::authenticate`) and admit (`Route::chain_for`, picking the caller's chain) →
//! request phase (`Chain::on_request`, `Chain::on_request_body`) → approval (to come; fails
//! closed) → `Upstream::forward` with the gateway's credential → response phase
//! (`Chain::on_response`, `Chain::on_response_body`, mask plans executed natively) →
//! `error::into_response` for failures. The audit log hears of every request: its decision
//! (`Audit::decide`, before forwarding; a failure before a decision is recorded on the way out)
//! and its completion when the response's last byte has gone (`Audit::watch`, which also writes
//! the session recording).
pub mod approval;
pub mod audit;
pub mod auth;
pub mod check;
pub mod cli;
pub mod codec;
pub mod config;
pub mod credential;
pub mod error;
pub mod gateway;
pub mod mask;
pub mod operation;
pub mod plugin;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod server;
pub mod upstream;
