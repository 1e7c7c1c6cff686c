//! The Rust SDK for Portcullis policy plugins: bindings to `portcullis:policy`, the [`Plugin`]
//! trait, the [`export_plugin!`] macro, and helpers plugin authors need.
//!
//! A plugin is a type implementing [`Plugin`]; every hook has a sensible default, so a plugin
//! writes only the phases it declares in [`Plugin::describe`]:
//!
//! ```no_run
//! use portcullis_sdk::{Descriptor, Headers, Phases, Plugin, Request, RequestVerdict};
//!
//! struct NoDeletes;
//!
//! impl Plugin for NoDeletes {
//!     fn describe() -> Descriptor {
//!         Descriptor::new("no-deletes", env!("CARGO_PKG_VERSION"), Phases::REQUEST_HEADERS)
//!     }
//!     fn on_request(req: &Request, _headers: &Headers) -> RequestVerdict {
//!         if req.method == "DELETE" {
//!             RequestVerdict::deny(403, "no-deletes", "deletes are not allowed")
//!         } else {
//!             RequestVerdict::Allow
//!         }
//!     }
//! }
//!
//! portcullis_sdk::export_plugin!(NoDeletes);
//! ```
//!
//! Keep policy decisions in plain functions over plain values (`&str`, `&[String]`, parsed
//! config) so they can be unit-tested with `cargo test` on the host target; the hooks only read
//! from [`Headers`] and [`Body`] (host resources, available inside the gateway only) and call
//! those functions.
#![deny(missing_docs)]

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod heap;
pub mod json;
pub mod matching;
pub mod pointer;

/// Bindings generated from `wit/policy.wit` (the only copy of the contract).
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "portcullis_sdk::bindings",
    });
}

pub use bindings::exports::portcullis::policy::plugin::Guest as __Guest;
pub use bindings::portcullis::policy::host::{Body, Headers};
pub use bindings::portcullis::policy::types::{
    Approval, ByteRange, Check, Deny, Descriptor, Finding, HeaderEdit, Level, MaskEdit, MaskPlan,
    MaskTarget, Phases, Principal, RegexTarget, Replacement, Request, RequestVerdict,
    ResponseVerdict, Span, Strategy,
};

/// The version of the `portcullis:policy` contract this SDK builds against.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// A policy plugin. Implement the hooks for the phases declared in [`Plugin::describe`];
/// the host never calls the others.
pub trait Plugin {
    /// Who the plugin is and what it needs. Called once when the gateway loads it.
    fn describe() -> Descriptor;

    /// Validate the operator's configuration (JSON text). An `Err` refuses the load.
    fn configure(_config: &str) -> Result<(), String> {
        Ok(())
    }

    /// Request phase, headers only.
    fn on_request(_req: &Request, _headers: &Headers) -> RequestVerdict {
        RequestVerdict::Allow
    }

    /// Request phase with the body, after [`RequestVerdict::NeedBody`].
    fn on_request_body(_req: &Request, _headers: &Headers, _body: &Body) -> RequestVerdict {
        RequestVerdict::Allow
    }

    /// Response phase, status and headers only.
    fn on_response(_req: &Request, _status: u16, _headers: &Headers) -> ResponseVerdict {
        ResponseVerdict::Pass
    }

    /// Response phase with the body, after [`ResponseVerdict::NeedBody`].
    fn on_response_body(
        _req: &Request,
        _status: u16,
        _headers: &Headers,
        _body: &Body,
    ) -> ResponseVerdict {
        ResponseVerdict::Pass
    }
}

/// Export a type implementing [`Plugin`] as the component's `portcullis:policy/plugin`.
/// Use it once per plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ident) => {
        impl $crate::__Guest for $plugin {
            fn describe() -> $crate::Descriptor {
                <$plugin as $crate::Plugin>::describe()
            }
            fn configure(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                <$plugin as $crate::Plugin>::configure(&config)
            }
            fn on_request(req: $crate::Request, headers: &$crate::Headers) -> $crate::RequestVerdict {
                <$plugin as $crate::Plugin>::on_request(&req, headers)
            }
            fn on_request_body(
                req: $crate::Request,
                headers: &$crate::Headers,
                body: &$crate::Body,
            ) -> $crate::RequestVerdict {
                <$plugin as $crate::Plugin>::on_request_body(&req, headers, body)
            }
            fn on_response(req: $crate::Request, status: u16, headers: &$crate::Headers) -> $crate::ResponseVerdict {
                <$plugin as $crate::Plugin>::on_response(&req, status, headers)
            }
            fn on_response_body(
                req: $crate::Request,
                status: u16,
                headers: &$crate::Headers,
                body: &$crate::Body,
            ) -> $crate::ResponseVerdict {
                <$plugin as $crate::Plugin>::on_response_body(&req, status, headers, body)
            }
        }
        $crate::bindings::export!($plugin with_types_in $crate::bindings);
    };
}

impl Descriptor {
    /// A descriptor with no body access, no content types, no patterns and no config schema.
    pub fn new(name: &str, version: &str, phases: Phases) -> Self {
        Descriptor {
            name: name.to_string(),
            version: version.to_string(),
            phases,
            request_body_limit: 0,
            response_body_limit: 0,
            request_content_types: Vec::new(),
            response_content_types: Vec::new(),
            patterns: Vec::new(),
            config_schema: None,
        }
    }

    /// Ask for request bodies of these media types, up to `limit` bytes.
    pub fn with_request_body(mut self, limit: u64, content_types: &[&str]) -> Self {
        self.request_body_limit = limit;
        self.phases |= Phases::REQUEST_BODY;
        self.request_content_types = owned(content_types);
        self
    }

    /// Ask for response bodies of these media types, up to `limit` bytes.
    pub fn with_response_body(mut self, limit: u64, content_types: &[&str]) -> Self {
        self.response_body_limit = limit;
        self.phases |= Phases::RESPONSE_BODY;
        self.response_content_types = owned(content_types);
        self
    }

    /// Regular expressions for the host to compile; refer to them by index.
    pub fn with_patterns(mut self, patterns: &[&str]) -> Self {
        self.patterns = owned(patterns);
        self
    }

    /// The JSON Schema of the plugin's configuration.
    pub fn with_config_schema(mut self, schema: &str) -> Self {
        self.config_schema = Some(schema.to_string());
        self
    }
}

fn owned(strings: &[&str]) -> Vec<String> {
    strings.iter().map(|s| s.to_string()).collect()
}

impl RequestVerdict {
    /// Refuse with `status`, a machine-readable `code` (e.g. the rule id) and a short reason.
    pub fn deny(status: u16, code: &str, reason: &str) -> Self {
        RequestVerdict::Deny(Deny {
            status,
            code: code.to_string(),
            reason: reason.to_string(),
            body: None,
        })
    }

    /// Hold for approval by any member of any of `approver_groups`, for up to `budget_ms`.
    pub fn require_approval(summary: &str, approver_groups: &[&str], budget_ms: u64) -> Self {
        RequestVerdict::RequireApproval(Approval {
            summary: summary.to_string(),
            approver_groups: owned(approver_groups),
            budget_ms,
        })
    }

    /// Let the request through with one header set.
    pub fn set_header(name: &str, value: &str) -> Self {
        RequestVerdict::Modify(vec![HeaderEdit::Set((name.to_string(), value.to_string()))])
    }
}

impl MaskPlan {
    /// An empty plan.
    pub fn new() -> Self {
        MaskPlan {
            edits: Vec::new(),
            findings: Vec::new(),
        }
    }

    /// Mask every value at a JSON pointer (wildcard `*` segments allowed). The host reports
    /// a finding of `kind` for each value masked.
    pub fn json_pointer(self, kind: &str, pointer: &str, strategy: Strategy) -> Self {
        self.edit(kind, MaskTarget::JsonPointer(pointer.to_string()), strategy)
    }

    /// Mask every match of host pattern `pattern` (its index in the descriptor's patterns).
    pub fn regex(self, kind: &str, pattern: u32, strategy: Strategy) -> Self {
        let target = RegexTarget {
            pattern,
            group: 0,
            check: Check::None,
        };
        self.edit(kind, MaskTarget::Regex(target), strategy)
    }

    /// Mask a byte range of a text body.
    pub fn byte_range(self, kind: &str, start: u64, end: u64, strategy: Strategy) -> Self {
        self.edit(
            kind,
            MaskTarget::ByteRange(ByteRange { start, end }),
            strategy,
        )
    }

    /// Add any edit: e.g. a [`RegexTarget`] masking a capture group, or with a [`Check`].
    pub fn edit(mut self, kind: &str, target: MaskTarget, strategy: Strategy) -> Self {
        self.edits.push(MaskEdit {
            target,
            strategy,
            kind: kind.to_string(),
        });
        self
    }

    /// Record a finding the edits do not show, for the audit log (never the value itself).
    pub fn finding(mut self, kind: &str, count: u32, location: &str) -> Self {
        self.findings.push(Finding {
            kind: kind.to_string(),
            count,
            location: location.to_string(),
        });
        self
    }
}

impl Default for MaskPlan {
    fn default() -> Self {
        Self::new()
    }
}

/// How the host reads a response body it masks, decided by its Content-Type (see
/// [`BodyKind::from_content_type`]). A plan must fit the kind: the host refuses a JSON pointer
/// on a text body and a byte range on a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// One JSON document: JSON pointers, and patterns inside string values.
    Json,
    /// UTF-8 text: patterns and byte ranges over the whole text.
    Text,
}

impl BodyKind {
    /// The host's rule: `application/json` and any `+json` type are [`BodyKind::Json`];
    /// `text/*`, `application/xml`, any `+xml` type and `application/x-www-form-urlencoded` are
    /// [`BodyKind::Text`]; anything else, or no Content-Type, the host cannot mask (`None`).
    /// Parameters and case are ignored.
    pub fn from_content_type(content_type: Option<&str>) -> Option<BodyKind> {
        let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
        let (ty, sub) = essence.split_once('/')?;
        let token = |s: &str| !s.is_empty() && !s.contains(['*', ' ', '/']);
        if !token(ty) || !token(sub) {
            return None;
        }
        if essence == "application/json" || sub.ends_with("+json") {
            Some(BodyKind::Json)
        } else if ty == "text"
            || essence == "application/xml"
            || sub.ends_with("+xml")
            || essence == "application/x-www-form-urlencoded"
        {
            Some(BodyKind::Text)
        } else {
            None
        }
    }
}

/// Calls into the gateway. They work only inside the gateway (they panic in native tests):
/// keep them out of the functions you unit-test.
pub mod host {
    use crate::bindings::portcullis::policy::host as wit;
    use crate::{Level, Span};

    /// Log through the gateway, tagged with the plugin's name.
    pub fn log(level: Level, message: &str) {
        wit::log(level, message);
    }

    /// The operator's configuration for this plugin (JSON text, `{}` when none).
    pub fn config() -> String {
        wit::config()
    }

    /// Up to `limit` matches of host pattern `pattern` in `text`.
    pub fn regex_find(pattern: u32, text: &str, limit: u32) -> Vec<Span> {
        wit::regex_find(pattern, text, limit)
    }

    /// Milliseconds since the Unix epoch (UTC).
    pub fn now_ms() -> u64 {
        wit::now_ms()
    }

    /// Add `delta` to this plugin's counter `name`.
    pub fn counter_add(name: &str, delta: u64) {
        wit::counter_add(name, delta);
    }
}
