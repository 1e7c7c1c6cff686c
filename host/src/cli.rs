//! The command line: `portcullis serve`, `portcullis check` and `portcullis plugins` (and, as
//! the gateway grows, `audit`, `approvals`, …), and the admin API client the last one uses.
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Portcullis: an identity-aware gateway with sandboxed WebAssembly policy plugins.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGTERM or SIGINT, then drain in-flight requests.
    Serve {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and load every plugin it names; report every problem.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The plugins of a running gateway, through its admin listener.
    Plugins {
        /// What to do.
        #[command(subcommand)]
        action: PluginsAction,
        /// The gateway's admin listener (`server.admin_listen`).
        #[arg(long, global = true, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
    },
}

/// `portcullis plugins …`.
#[derive(Debug, Subcommand)]
pub enum PluginsAction {
    /// Each loaded plugin's name, version, sha256 and load time, and the generation serving.
    List,
    /// Reload plugins and policy now; prints the outcome (exit 1 when rejected).
    Reload,
}

/// Send `method path` to an admin listener; the status and the body.
pub async fn admin_request(
    admin: SocketAddr,
    method: http::Method,
    path: &str,
) -> Result<(u16, String), String> {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(120), client.request(request))
            .await
            .map_err(|_| format!("{admin}: no answer within 120 s"))?
            .map_err(|e| format!("{admin}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{admin}: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `portcullis plugins list` as text: one line per plugin, then the generation and last reload.
pub fn render_plugins(status: &serde_json::Value) -> String {
    let mut out = String::new();
    for p in status["plugins"].as_array().into_iter().flatten() {
        let name = match p["alias"].as_str() {
            Some(alias) => format!("{} (alias {alias})", p["name"].as_str().unwrap_or("?")),
            None => p["name"].as_str().unwrap_or("?").to_string(),
        };
        out.push_str(&format!(
            "{name:<32} {:<10} sha256:{} loaded_at_ms:{}\n",
            p["version"].as_str().unwrap_or("?"),
            p["sha256"].as_str().unwrap_or("?"),
            p["loaded_at_ms"],
        ));
    }
    let s = &status["status"];
    out.push_str(&format!(
        "generation {} (published_at_ms {}), reloads applied {}, rejected {}\n",
        s["generation"], s["published_at_ms"], s["applied"], s["rejected"]
    ));
    if let Some(last) = s.get("last").filter(|l| !l.is_null()) {
        out.push_str(&format!(
            "last reload: {} ({}){}\n",
            last["outcome"].as_str().unwrap_or("?"),
            last["trigger"].as_str().unwrap_or("?"),
            last["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    out
}
