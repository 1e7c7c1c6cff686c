//! Test plugin that allows every request and passes every response.
use portcullis_sdk::{
    Descriptor, Headers, Phases, Plugin, Request, RequestVerdict, ResponseVerdict,
};

struct AllowAll;

impl Plugin for AllowAll {
    fn describe() -> Descriptor {
        Descriptor::new(
            "allow-all",
            env!("CARGO_PKG_VERSION"),
            Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS,
        )
    }

    fn on_request(_req: &Request, _headers: &Headers) -> RequestVerdict {
        RequestVerdict::Allow
    }

    fn on_response(_req: &Request, _status: u16, _headers: &Headers) -> ResponseVerdict {
        ResponseVerdict::Pass
    }
}

portcullis_sdk::export_plugin!(AllowAll);
