//! Test plugin whose descriptor asks the host to compile an invalid regular expression.
use portcullis_sdk::{Descriptor, Phases, Plugin};

struct BadDescribe;

impl Plugin for BadDescribe {
    fn describe() -> Descriptor {
        Descriptor::new(
            "bad-describe",
            env!("CARGO_PKG_VERSION"),
            Phases::REQUEST_HEADERS,
        )
        .with_patterns(&["[a-z]+", "(unclosed"])
    }
}

portcullis_sdk::export_plugin!(BadDescribe);
