//! Test plugin that denies every request with 403 and code `deny-all`.
use portcullis_sdk::{Descriptor, Headers, Phases, Plugin, Request, RequestVerdict};

struct DenyAll;

impl Plugin for DenyAll {
    fn describe() -> Descriptor {
        Descriptor::new(
            "deny-all",
            env!("CARGO_PKG_VERSION"),
            Phases::REQUEST_HEADERS,
        )
    }

    fn on_request(_req: &Request, _headers: &Headers) -> RequestVerdict {
        RequestVerdict::deny(
            403,
            "deny-all",
            "every request is denied by the deny-all plugin",
        )
    }
}

portcullis_sdk::export_plugin!(DenyAll);
