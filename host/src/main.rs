//! The `portcullis` binary: parse the command line, set up logging, run, map to an exit code.
use std::process::ExitCode;

use clap::Parser;
use portcullis::cli::{self, AuditAction, Cli, Command, PluginsAction, SessionsAction};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("portcullis: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve { config } => runtime.block_on(serve(&config)),
        Command::Plugins {
            action,
            admin,
            token_file,
        } => runtime.block_on(plugins(action, admin, token_file.as_deref())),
        Command::Approvals {
            action,
            admin,
            token_file,
        } => ExitCode::from(runtime.block_on(cli::approvals(action, admin, token_file.as_deref()))),
        Command::Keygen { name, out } => ExitCode::from(cli::keygen(&name, &out)),
        Command::Audit {
            action:
                AuditAction::Verify {
                    dir,
                    trust,
                    anchor,
                    state,
                    heartbeat,
                    strict,
                    format,
                },
        } => ExitCode::from(cli::audit_verify(
            &dir, &trust, anchor, state, heartbeat, strict, format,
        )),
        Command::Audit {
            action:
                AuditAction::Export {
                    dir,
                    format: _,
                    out,
                },
        } => ExitCode::from(cli::audit_export(&dir, out.as_deref())),
        Command::Sessions {
            action: SessionsAction::List { dir },
        } => ExitCode::from(cli::sessions_list(&dir)),
        Command::Sessions {
            action: SessionsAction::Export {
                dir, session, out, ..
            },
        } => ExitCode::from(cli::sessions_export(&dir, &session, out.as_deref())),
        Command::Check { config } => {
            let report = runtime.block_on(portcullis::check::check(&config));
            print!("{}", report.render(&config));
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// `portcullis plugins list | reload` against a running gateway's admin listener.
async fn plugins(
    action: PluginsAction,
    admin: std::net::SocketAddr,
    token_file: Option<&std::path::Path>,
) -> ExitCode {
    let (method, path) = match action {
        PluginsAction::List => (http::Method::GET, "/plugins"),
        PluginsAction::Reload => (http::Method::POST, "/reload"),
    };
    let token = match token_file.map(portcullis::cli::read_token).transpose() {
        Ok(token) => token,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(2);
        }
    };
    match portcullis::cli::admin_request(admin, method, path, token.as_deref()).await {
        Ok((200, body)) if path == "/plugins" => {
            match serde_json::from_str(&body) {
                Ok(status) => print!("{}", portcullis::cli::render_plugins(&status)),
                Err(_) => print!("{body}"),
            }
            ExitCode::SUCCESS
        }
        Ok((200, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprint!("portcullis: {path} answered {status}:\n{body}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::from(2)
        }
    }
}

/// Load the configuration, start the listeners, wait for SIGTERM or SIGINT, drain.
async fn serve(path: &std::path::Path) -> ExitCode {
    let config = match portcullis::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(1);
        }
    };
    let running = match portcullis::server::start(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("portcullis: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "portcullis: listening on {}{}",
        running.local_addr(),
        running
            .admin_addr()
            .map(|a| format!(", admin on {a}"))
            .unwrap_or_default()
    );
    if let Err(e) = shutdown_signal().await {
        eprintln!("portcullis: cannot wait for signals: {e}");
    }
    eprintln!("portcullis: shutting down, draining in-flight requests");
    running.shutdown().await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
