//! A development identity provider for the quickstart (`scripts/run.sh`): serves an OIDC
//! discovery document and a JWKS over plain HTTP on 127.0.0.1, with a signing key made at
//! start, and writes a few ready-made access tokens for the example configuration.
//!
//! `dev_idp PORT DIR` listens on `127.0.0.1:PORT` (issuer `http://localhost:PORT`), writes
//! `DIR/agent.jwt` (role `agent`), `DIR/approver.jwt` (role `approver`) and `DIR/auditor.jwt`
//! (role `auditor`), all for audience `api://portcullis-example` and valid for 12 hours, prints `ready` and serves until killed.
//! Not for anything but local demos: plain HTTP, keys in memory, tokens for anyone who asks.
use std::process::ExitCode;

use portcullis_tests::oidc::{Idp, SigningKey};

const AUDIENCE: &str = "api://portcullis-example";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(dir)) = (args.get(1).and_then(|p| p.parse::<u16>().ok()), args.get(2))
    else {
        eprintln!("usage: dev_idp PORT DIR");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dev_idp: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("dev_idp: cannot listen on 127.0.0.1:{port}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let idp = Idp::serve(listener, None, SigningKey::rsa("dev-1"));
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("dev_idp: {dir}: {e}");
            return ExitCode::FAILURE;
        }
        // The auditor's token is written last: its presence says all three are there.
        for (file, role) in [
            ("agent.jwt", "agent"),
            ("approver.jwt", "approver"),
            ("auditor.jwt", "auditor"),
        ] {
            let mut claims = idp.claims(AUDIENCE, &format!("example-{role}"));
            claims["exp"] = serde_json::json!(portcullis_tests::oidc::now() + 12 * 3600);
            claims["roles"] = serde_json::json!([role]);
            let path = std::path::Path::new(dir).join(file);
            if let Err(e) = std::fs::write(&path, idp.mint(&claims)) {
                eprintln!("dev_idp: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        println!("ready: issuer {}", idp.issuer());
        std::future::pending::<()>().await;
        ExitCode::SUCCESS
    })
}
