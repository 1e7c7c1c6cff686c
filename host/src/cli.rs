//! The command line: `serve`, `check`, `plugins`, `keygen`, `audit verify | export` and
//! `sessions list | export`, the admin API client `plugins` uses, and the offline commands an
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
