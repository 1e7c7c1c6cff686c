//! The command line: `serve`, `check`, `plugins`, `keygen`, `audit verify | export`,
//! `sessions list | export` and `approvals list | show | approve | deny`, the admin API client
//! `plugins` and `approvals` use, and the offline commands an
//! auditor runs (each returns its exit code).
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        /// A file holding the admin token (the gateway's `server.admin_token_file`); unset:
        /// none is sent, which a gateway without an admin token accepts from loopback only.
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
    },
    /// Make an Ed25519 signing key for the audit log: `PREFIX.key` (PKCS#8 PEM, mode 0600) for
    /// the gateway, `PREFIX.pub` (a verifier key, one line) for auditors' trust files.
    Keygen {
        /// The log's origin (`audit.origin`): the name the key signs as.
        #[arg(long)]
        name: String,
        /// Where to write: `PREFIX.key` and `PREFIX.pub`. Existing files are never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify or export an audit log, offline.
    Audit {
        /// What to do.
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Session recordings (HAR).
    Sessions {
        /// What to do.
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Approval requests of a running gateway, through its admin listener, as an approver.
    Approvals {
        /// What to do.
        #[command(subcommand)]
        action: ApprovalsAction,
        /// The gateway's admin listener (`server.admin_listen`).
        #[arg(long, global = true, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// A file holding the approver's access token (from `approvals.identity_provider`);
        /// unset: the environment variable `PORTCULLIS_TOKEN`.
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
    },
}

/// `portcullis approvals …`.
#[derive(Debug, Subcommand)]
pub enum ApprovalsAction {
    /// Requests waiting for a decision (or of another status).
    List {
        /// `pending`, `approved`, `denied`, `expired` or `all`.
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// One request: what was asked, by whom, its decision, grants and notifications (JSON).
    Show {
        /// The approval id (`apr-…`).
        id: String,
    },
    /// Approve a request: the identical request passes once within the grant's lifetime.
    Approve {
        /// The approval id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        /// Also let the requester run operations matching this pattern on the route…
        #[arg(long, requires = "scope_window")]
        scope_operation: Option<String>,
        /// …for this long (e.g. `30m`).
        #[arg(long, requires = "scope_operation")]
        scope_window: Option<String>,
    },
    /// Deny a request: the held request gets 403 with the reason.
    Deny {
        /// The approval id.
        id: String,
        /// Why (the requester sees it; recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

/// `portcullis audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check a log's chain, Merkle tree, signed checkpoints, segments and liveness against a
    /// pinned trust file. Exit 0 pass, 1 integrity failure, 2 warnings under `--strict`, 3 usage
    /// or I/O error.
    Verify {
        /// The log directory (`audit.dir`).
        #[arg(long)]
        dir: PathBuf,
        /// The trust file: verifier keys handed over out of band (never one found beside the log).
        #[arg(long)]
        trust: PathBuf,
        /// Checkpoints held elsewhere that the log must still contain.
        #[arg(long)]
        anchor: Option<PathBuf>,
        /// State saved by the last run: the log must extend it; rewritten after a pass.
        #[arg(long)]
        state: Option<PathBuf>,
        /// The gateway's heartbeat interval (`audit.heartbeat`).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
        /// Warnings fail too (exit 2).
        #[arg(long)]
        strict: bool,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: OutputFormat,
    },
    /// Export records for a SIEM: OCSF API Activity JSON Lines, each event carrying its `seq`
    /// and leaf hash back to the evidence.
    Export {
        /// The log directory.
        #[arg(long)]
        dir: PathBuf,
        /// The export format (`ocsf`).
        #[arg(long, default_value = "ocsf")]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

/// `portcullis sessions …`.
#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// Every recorded session: entries, first and last time, size, chain.
    List {
        /// The recordings directory (`sessions.dir`).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Export one session as a standard HAR 1.2 file (browser devtools, Fiddler, Postman).
    Export {
        /// The recordings directory.
        #[arg(long)]
        dir: PathBuf,
        /// The session id (see `sessions list`).
        session: String,
        /// HAR 1.2 (the only format).
        #[arg(long)]
        har: bool,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

/// A report's format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// For machines.
    Json,
}

/// An export format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// OCSF 1.4 API Activity (class 6003), JSON Lines.
    Ocsf,
}

/// `portcullis keygen`.
pub fn keygen(name: &str, out: &Path) -> u8 {
    let with = |ext: &str| {
        let mut path = out.as_os_str().to_owned();
        path.push(ext);
        PathBuf::from(path)
    };
    let (private, public) = (with(".key"), with(".pub"));
    // A missing directory is made for the key, readable by its owner only.
    if let Some(parent) = private.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
        {
            eprintln!(
                "portcullis: keygen: cannot create {}: {e}",
                parent.display()
            );
            return 3;
        }
        println!("created {} (mode 0700)", parent.display());
    }
    let written = portcullis_audit::note::SigningKey::generate(name)
        .and_then(|key| key.write(&private, &public).map(|()| key.verifier()));
    match written {
        Ok(verifier) => {
            println!(
                "signing key: {} (mode 0600; configure it as audit.signing_key_file)",
                private.display()
            );
            println!(
                "verifier key: {} (give it to auditors for their trust file)",
                public.display()
            );
            println!("{verifier}");
            0
        }
        Err(e) => {
            eprintln!("portcullis: keygen: {e}");
            3
        }
    }
}

/// `portcullis audit verify`: exit 0 pass, 1 failure, 2 warnings under `--strict`, 3 usage or
/// I/O error.
#[allow(clippy::too_many_arguments)]
pub fn audit_verify(
    dir: &Path,
    trust: &Path,
    anchor: Option<PathBuf>,
    state: Option<PathBuf>,
    heartbeat: Duration,
    strict: bool,
    format: OutputFormat,
) -> u8 {
    use portcullis_audit::{note, verify};
    let trusted = match std::fs::read_to_string(trust)
        .map_err(|e| format!("{}: {e}", trust.display()))
        .and_then(|text| note::parse_trust(&text).map_err(|e| format!("{}: {e}", trust.display())))
    {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("portcullis: audit verify: trust file {e}");
            return 3;
        }
    };
    let mut options = verify::Options::new(dir, trusted);
    options.anchor = anchor;
    options.state = state;
    options.heartbeat = heartbeat;
    // Progress on standard error for logs big enough to wait for.
    let mut last_shown = 0u64;
    options.progress = Some(Box::new(move |done, total| {
        if total >= 64 << 20 && (done - last_shown >= 32 << 20 || done == total) {
            last_shown = done;
            eprint!(
                "\rverifying: {} of {} MiB ({}%)",
                done >> 20,
                total >> 20,
                done * 100 / total.max(1)
            );
            if done == total {
                eprintln!();
            }
        }
    }));
    match verify::verify(options) {
        Ok(report) => {
            match format {
                OutputFormat::Text => print!("{}", report.render_text()),
                OutputFormat::Json => println!("{}", report.to_json()),
            }
            report.exit_code(strict)
        }
        Err(e) => {
            eprintln!("portcullis: audit verify: {e}");
            3
        }
    }
}

/// `portcullis audit export`.
pub fn audit_export(dir: &Path, out: Option<&Path>) -> u8 {
    let mut sink: Box<dyn std::io::Write> = match out {
        None => Box::new(std::io::stdout().lock()),
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("portcullis: audit export: {}: {e}", path.display());
                return 3;
            }
        },
    };
    match portcullis_audit::export::export_ocsf(dir, &mut sink) {
        Ok(summary) => {
            eprintln!("{summary}");
            if summary.is_clean() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("portcullis: audit export: {e}");
            3
        }
    }
}

/// `portcullis sessions list`.
pub fn sessions_list(dir: &Path) -> u8 {
    match portcullis_audit::har::list(dir) {
        Ok(sessions) => {
            println!(
                "{:<64} {:>8} {:>10}  {:<27} {:<27} chain",
                "session", "entries", "bytes", "first", "last"
            );
            for s in &sessions {
                let chain = match (&s.broken, &s.problem) {
                    (None, _) => "ok".to_string(),
                    (Some(seq), problem) => {
                        format!("BROKEN at seq {seq}: {}", problem.as_deref().unwrap_or("?"))
                    }
                };
                println!(
                    "{:<64} {:>8} {:>10}  {:<27} {:<27} {chain}",
                    s.id,
                    s.entries,
                    s.bytes,
                    s.first_ts.as_deref().unwrap_or("-"),
                    s.last_ts.as_deref().unwrap_or("-"),
                );
            }
            u8::from(sessions.iter().any(|s| s.broken.is_some()))
        }
        Err(e) => {
            eprintln!("portcullis: sessions list: {e}");
            3
        }
    }
}

/// `portcullis sessions export --har`.
pub fn sessions_export(dir: &Path, session: &str, out: Option<&Path>) -> u8 {
    let har = match portcullis_audit::har::export(dir, session) {
        Ok(har) => har,
        Err(e) => {
            eprintln!("portcullis: sessions export: {e}");
            return 1;
        }
    };
    let text = match serde_json::to_string_pretty(&har) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("portcullis: sessions export: {e}");
            return 3;
        }
    };
    let written = match out {
        None => writeln!(std::io::stdout().lock(), "{text}"),
        Some(path) => std::fs::write(path, text + "\n"),
    };
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("portcullis: sessions export: {e}");
            3
        }
    }
}

/// `portcullis plugins …`.
#[derive(Debug, Subcommand)]
pub enum PluginsAction {
    /// Each loaded plugin's name, version, sha256 and load time, and the generation serving.
    List,
    /// Reload plugins and policy now; prints the outcome (exit 1 when rejected).
    Reload,
}

/// Send `method path` to an admin listener, with the admin token when one is given; the
/// status and the body.
pub async fn admin_request(
    admin: SocketAddr,
    method: http::Method,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    admin_call(admin, method, path, token, None).await
}

/// A token from a file (`--token-file`): its text without surrounding whitespace.
pub fn read_token(file: &Path) -> Result<String, String> {
    let bytes = crate::credential::read_secret(file).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", file.display()))?;
    Ok(text.trim().to_string())
}

/// A call to the admin listener with a bearer token and a JSON body; the status and the body.
/// The token goes in the header only: never in an error or the output.
pub async fn admin_call(
    admin: SocketAddr,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(u16, String), String> {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"));
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
        .map_err(|_| "the request could not be built (is the token one line?)".to_string())?;
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

/// `portcullis approvals …` against a running gateway's admin listener: exit 0 done, 1 refused
/// by the gateway, 2 unreachable or unusable input.
pub async fn approvals(
    action: ApprovalsAction,
    admin: SocketAddr,
    token_file: Option<&Path>,
) -> u8 {
    let token = match token_file {
        Some(file) => read_token(file),
        None => std::env::var("PORTCULLIS_TOKEN")
            .map_err(|_| "no token: pass --token-file or set PORTCULLIS_TOKEN".to_string()),
    };
    let token = match token {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            eprintln!("portcullis: {e}");
            return 2;
        }
    };
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string();
    let (method, path, body) = match &action {
        ApprovalsAction::List { status } => (
            http::Method::GET,
            format!("/api/approvals?status={}", encode(status)),
            None,
        ),
        ApprovalsAction::Show { id } => (
            http::Method::GET,
            format!("/api/approvals/{}", encode(id)),
            None,
        ),
        ApprovalsAction::Approve {
            id,
            reason,
            scope_operation,
            scope_window,
        } => {
            let mut verdict = serde_json::json!({"reason": reason});
            if let (Some(operation), Some(window)) = (scope_operation, scope_window) {
                verdict["scope"] = serde_json::json!({"operation": operation, "window": window});
            }
            (
                http::Method::POST,
                format!("/api/approvals/{}/approve", encode(id)),
                Some(verdict.to_string()),
            )
        }
        ApprovalsAction::Deny { id, reason } => (
            http::Method::POST,
            format!("/api/approvals/{}/deny", encode(id)),
            Some(serde_json::json!({"reason": reason}).to_string()),
        ),
    };
    match admin_call(admin, method, &path, Some(&token), body).await {
        Ok((200, body)) => {
            let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            match action {
                ApprovalsAction::List { .. } => print!("{}", render_approvals(&value)),
                ApprovalsAction::Show { .. } => println!("{value:#}"),
                ApprovalsAction::Approve { id, .. } => println!("approved {id}"),
                ApprovalsAction::Deny { id, .. } => println!("denied {id}"),
            }
            0
        }
        Ok((status, body)) => {
            let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let message = value["error"]["message"].as_str().unwrap_or(body.trim());
            let code = value["error"]["code"].as_str().unwrap_or("");
            eprintln!("portcullis: the gateway answered {status} {code}: {message}");
            1
        }
        Err(e) => {
            eprintln!("portcullis: {e}");
            2
        }
    }
}

/// `portcullis approvals list` as text: one line per request.
pub fn render_approvals(list: &serde_json::Value) -> String {
    let requests = list["approvals"].as_array().cloned().unwrap_or_default();
    if requests.is_empty() {
        return "no approval requests\n".into();
    }
    let mut out = String::new();
    for r in requests {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
        out.push_str(&format!(
            "{}  {:<8} {} {}  route={} operation={} by={} groups={}  {}\n",
            text(&r["id"]),
            text(&r["status"]),
            text(&r["request"]["method"]),
            text(&r["request"]["url"]),
            text(&r["route"]),
            text(&r["operation"]),
            text(&r["requester"]["subject"]),
            r["approver_groups"]
                .as_array()
                .map(|g| g.iter().map(text).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            text(&r["summary"]).chars().take(120).collect::<String>(),
        ));
    }
    out
}
