//! Test plugin that misbehaves on demand, to prove the host survives every kind of bad guest.
//!
//! The mode comes from the `x-misbehave` header (request headers in the request phase, response
//! headers in the response phase), else from the config `{"mode": "..."}`, else `none`:
//!
//! | mode           | what the plugin does                                             |
//! |----------------|------------------------------------------------------------------|
//! | `none`         | allow / pass                                                     |
//! | `trap`         | executes `unreachable` (abort)                                   |
//! | `panic`        | panics (a trap with `panic = "abort"`)                           |
//! | `loop`         | spins forever                                                    |
//! | `slow:N`       | spins for N milliseconds, then allows                            |
//! | `memory`       | allocates 1 MiB chunks until the memory limit stops it           |
//! | `huge-output`  | denies with an 8 MiB reason                                      |
//! | `bad-verdict`  | asks for more body than its descriptor declared                  |
//! | `bad-status`   | denies with status 200                                           |
//! | `bad-mask`     | (response) masks with a pattern index it never declared          |
//! | `log-flood`    | logs 10 000 lines, then allows                                   |
//! | `stdout-flood` | prints 1 MiB to stdout, then allows                              |
//! | `remember`     | denies if a global still holds an earlier call's request id;     |
//! |                | (response) replaces the response with a 409 carrying that id     |
//! | `probe`        | denies with a report of what it can reach (files, env, args)  |
//! | `need-body`    | asks for the body, then denies / masks based on its content      |
//! | `whoami`       | denies with the principal it was given, as JSON (or `null`)      |
use std::sync::Mutex;

use portcullis_sdk::host;
use portcullis_sdk::{
    Body, Descriptor, Headers, Level, MaskPlan, Phases, Plugin, Replacement, Request,
    RequestVerdict, ResponseVerdict, Strategy,
};

/// Request id of the previous call, for `remember`.
static LAST_REQUEST: Mutex<Option<String>> = Mutex::new(None);

const BODY_LIMIT: u64 = 1 << 20;

struct Misbehave;

fn mode(headers: &Headers) -> String {
    headers.get("x-misbehave").unwrap_or_else(|| {
        serde_json::from_str::<serde_json::Value>(&host::config())
            .ok()
            .and_then(|c| c.get("mode").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| "none".to_string())
    })
}

/// The principal the host handed over, as JSON.
fn whoami(req: &Request) -> String {
    let Some(p) = &req.principal else {
        return "null".to_string();
    };
    serde_json::json!({
        "subject": p.subject,
        "issuer": p.issuer,
        "tenant": p.tenant,
        "app_id": p.app_id,
        "roles": p.roles,
        "groups": p.groups,
        "groups_complete": p.groups_complete,
        "scopes": p.scopes,
        "claims": p.claims,
    })
    .to_string()
}

/// Misbehaviours shared by both phases. Returns a deny to send, if any.
fn misbehave(mode: &str, req: &Request) -> Option<RequestVerdict> {
    match mode {
        "trap" => std::process::abort(),
        "panic" => panic!("misbehave: asked to panic"),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![0xAB; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "huge-output" => Some(RequestVerdict::deny(403, "huge", &"x".repeat(8 << 20))),
        "bad-status" => Some(RequestVerdict::deny(
            200,
            "bad-status",
            "not an error status",
        )),
        "log-flood" => {
            for i in 0..10_000 {
                host::log(Level::Info, &format!("flood line {i}"));
            }
            None
        }
        "stdout-flood" => {
            let line = "y".repeat(1023);
            for _ in 0..1024 {
                println!("{line}");
            }
            None
        }
        "remember" => {
            let mut last = LAST_REQUEST.lock().unwrap_or_else(|e| e.into_inner());
            let previous = last.replace(req.id.clone());
            previous.map(|p| RequestVerdict::deny(409, "saw-previous", &p))
        }
        "probe" => Some(RequestVerdict::deny(418, "probe", &probe())),
        "whoami" => Some(RequestVerdict::deny(418, "whoami", &whoami(req))),
        m if m.starts_with("slow:") => {
            let ms: u64 = m["slow:".len()..].parse().unwrap_or(0);
            let until = host::now_ms() + ms;
            while host::now_ms() < until {
                std::hint::spin_loop();
            }
            None
        }
        _ => None,
    }
}

/// What the sandbox lets the guest reach, as `fs=… file=… env=… args=…`.
/// (Sockets are not probed: Debian's wasi-libc has none; the host links them denied.)
fn probe() -> String {
    let fs = match std::fs::read_dir("/") {
        Ok(_) => "open".to_string(),
        Err(_) => "denied".to_string(),
    };
    let file = match std::fs::read("/etc/passwd") {
        Ok(_) => "open",
        Err(_) => "denied",
    };
    let env = std::env::vars().count();
    let args = std::env::args().count();
    format!("fs={fs} file={file} env={env} args={args}")
}

impl Plugin for Misbehave {
    fn describe() -> Descriptor {
        Descriptor::new(
            "misbehave",
            env!("CARGO_PKG_VERSION"),
            Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS,
        )
        .with_request_body(BODY_LIMIT, &["*/*"])
        .with_response_body(BODY_LIMIT, &["application/json", "text/*"])
        .with_patterns(&[r"secret-[0-9]+"])
        .with_config_schema(r#"{"type":"object","properties":{"mode":{"type":"string"}}}"#)
    }

    fn configure(config: &str) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_str(config).map_err(|e| format!("config is not JSON: {e}"))?;
        match value.get("mode") {
            None => Ok(()),
            Some(serde_json::Value::String(m)) if m == "reject-config" => {
                Err("mode `reject-config` refuses every configuration".to_string())
            }
            Some(serde_json::Value::String(_)) => Ok(()),
            Some(_) => Err("`mode` must be a string".to_string()),
        }
    }

    fn on_request(req: &Request, headers: &Headers) -> RequestVerdict {
        let mode = mode(headers);
        match mode.as_str() {
            "bad-verdict" => RequestVerdict::NeedBody(BODY_LIMIT * 64),
            "need-body" => RequestVerdict::NeedBody(BODY_LIMIT),
            m => misbehave(m, req).unwrap_or(RequestVerdict::Allow),
        }
    }

    fn on_request_body(_req: &Request, _headers: &Headers, body: &Body) -> RequestVerdict {
        match body.text() {
            Ok(text) if text.contains("forbidden") => {
                RequestVerdict::deny(403, "body-forbidden", "the body says forbidden")
            }
            Ok(_) => RequestVerdict::Allow,
            Err(_) => RequestVerdict::deny(415, "not-text", "body is not UTF-8"),
        }
    }

    fn on_response(req: &Request, _status: u16, headers: &Headers) -> ResponseVerdict {
        let mode = mode(headers);
        match mode.as_str() {
            "need-body" | "bad-mask" => ResponseVerdict::NeedBody(BODY_LIMIT),
            "remember" => match LAST_REQUEST
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                Some(id) => ResponseVerdict::Replace(Replacement {
                    status: 409,
                    headers: Vec::new(),
                    body: id.into_bytes(),
                }),
                None => ResponseVerdict::Pass,
            },
            m => {
                // A deny has no meaning in the response phase: such modes degrade to a pass.
                let _ = misbehave(m, req);
                ResponseVerdict::Pass
            }
        }
    }

    fn on_response_body(
        _req: &Request,
        _status: u16,
        headers: &Headers,
        body: &Body,
    ) -> ResponseVerdict {
        if mode(headers) == "bad-mask" {
            return ResponseVerdict::Mask(MaskPlan::new().regex(
                "x",
                99,
                Strategy::Redact("X".into()),
            ));
        }
        let text = body.text().unwrap_or_default();
        let hits = host::regex_find(0, &text, 1000);
        if hits.is_empty() {
            return ResponseVerdict::Pass;
        }
        host::counter_add("secrets-masked", hits.len() as u64);
        ResponseVerdict::Mask(MaskPlan::new().regex("secret", 0, Strategy::Redact("SECRET".into())))
    }
}

portcullis_sdk::export_plugin!(Misbehave);
