//! Test plugin for hot reload: it stamps every request it lets through with its version marker
//! (`x-plugin-version`, seen by the upstream), and with `x-slow-ms: N` in the request it first
//! spins N milliseconds, so a test can keep a request in flight across a swap. Tests make new
//! versions by rewriting [`MARKER`] in the component's bytes (same length, so the component
//! stays valid): each rewrite is a distinct file with a distinct sha256 and behaviour.
//! `configure` refuses `{"refuse": true}`, for the failing-configure case.
use portcullis_sdk::{Descriptor, Headers, Phases, Plugin, Request, RequestVerdict, host};

/// The version marker; tests rewrite the two digits at its end.
pub const MARKER: &str = "portcullis-test-version-00";

struct Versioned;

impl Plugin for Versioned {
    fn describe() -> Descriptor {
        Descriptor::new(
            "versioned",
            env!("CARGO_PKG_VERSION"),
            Phases::REQUEST_HEADERS,
        )
    }

    fn configure(config: &str) -> Result<(), String> {
        if config.contains("\"refuse\":true") {
            return Err("configured to refuse".to_string());
        }
        Ok(())
    }

    fn on_request(_req: &Request, headers: &Headers) -> RequestVerdict {
        if let Some(ms) = headers.get("x-slow-ms").and_then(|v| v.parse::<u64>().ok()) {
            let until = host::now_ms() + ms;
            while host::now_ms() < until {
                std::hint::spin_loop();
            }
        }
        // Read through a volatile copy so the marker stays one literal in the data segment.
        let marker = std::hint::black_box(MARKER);
        RequestVerdict::set_header("x-plugin-version", marker)
    }
}

portcullis_sdk::export_plugin!(Versioned);
