//! `mask`: masks secrets and personal data in response bodies. The plugin only plans: it
//! answers with a mask plan (JSON pointers for field rules, host patterns for detectors) and
//! the host rewrites the body natively (`host/src/mask.rs`); the plugin never reads a body byte.
//!
//! Operator configuration (JSON, from the gateway's TOML), validated in full by `configure`:
//! ```json
//! {
//!   "body_limit": 4194304,
//!   "fields": [
//!     {"pointer": "/value/*/properties/primaryKey", "kind": "storage-key", "strategy": "redact", "label": "SECRET"},
//!     {"pointer": "/keys/*/value", "kind": "storage-key"},
//!     {"pointer": "/owner/id", "kind": "user-id", "strategy": "hash", "label": "USER"},
//!     {"pointer": "/card", "kind": "card-field", "strategy": "partial", "keep": 4}
//!   ],
//!   "detectors": {"email": true, "phone": {"strategy": "partial", "keep": 4}, "ssn": true,
//!                 "ipv6": false, "high-entropy": {"min_entropy": 4.5}}
//! }
//! ```
//!
//! - `body_limit`: bytes of a response body to ask for (1..=64 MiB, default 4 MiB). A larger
//!   body is the route's business: by default the gateway answers 502 (masking fails closed);
//!   with the route's `unmasked_passthrough` it goes out unmasked, and is logged.
//! - `fields[]`: values to mask in JSON bodies, whatever they look like. `pointer` (required,
//!   RFC 6901: `""` or starting with `/`, `~0` and `~1` the only escapes, a `*` segment matches
//!   every member or element; an object or array found there is masked member by member),
//!   `kind` (required, `[a-z0-9._-]{1,64}`: the finding kind in the audit log), and a strategy.
//! - A strategy is `strategy`: `"redact"` (default: `[LABEL]`), `"partial"` (keep the last
//!   `keep` characters, 0..=64, default 4; the rest become `*`) or `"hash"` (`[LABEL:h]`, h the
//!   first 16 hex digits of an HMAC-SHA-256 with the gateway's key, `[masking] hash_key_file`,
//!   so masked values still correlate; without that key, every response masked with a `hash`
//!   edit fails closed). `label` (`[A-Z0-9_]{1,32}`) goes with redact and hash only (default
//!   `REDACTED` for field rules, the detector's own for detectors), `keep` with partial only.
//! - `detectors`: detector name → `true` (on, redact with its label), `false` (off) or an
//!   object with a strategy (`strategy`, `label`, `keep`; `min_entropy` too for `high-entropy`:
//!   3.0..=6.0 bits per character, default 4.3), which turns it on. A detector not mentioned
//!   keeps its default: on, except `ssn` and `high-entropy`, whose loose shapes match random
//!   ids. Unknown names are refused.
//!
//! Detectors (the finding kind is the name; see [`detectors::DETECTORS`] for the patterns):
//!
//! | detector | masks | check (host) | label | default |
//! |---|---|---|---|---|
//! | `private-key` | a whole PEM `-----BEGIN ... PRIVATE KEY-----` block | | `PRIVATE_KEY` | on |
//! | `jwt` | `eyJ...eyJ...sig` | | `JWT` | on |
//! | `azure-connection-string` | the value of `AccountKey=`, `SharedAccessKey=`, `SharedAccessSignature=` | | `AZURE_SECRET` | on |
//! | `sas-signature` | the value of a `sig=` query parameter | | `SAS_SIGNATURE` | on |
//! | `azure-storage-key` | 88-character base64 keys (`...==`) | | `AZURE_STORAGE_KEY` | on |
//! | `aws-access-key` | `AKIA`/`ASIA`/`ABIA`/`ACCA` key ids | | `AWS_ACCESS_KEY` | on |
//! | `bearer-token` | the token after `Bearer ` | | `BEARER_TOKEN` | on |
//! | `email` | e-mail addresses | | `EMAIL` | on |
//! | `iban` | IBANs, compact or in groups of four | mod 97 | `IBAN` | on |
//! | `phone` | `+` international numbers, `(415) 555-0132`, `415-555-0132`, `415.555.0132` | | `PHONE` | on |
//! | `card` | 12-19 digits starting 2-6, spaces or dashes allowed | Luhn | `CARD` | on |
//! | `ssn` | `ddd-dd-dddd` | | `SSN` | off |
//! | `ipv4` | dotted quads, octets 0-255 | | `IP` | on |
//! | `ipv6` | full and `::`-compressed addresses (not `::1`) | | `IP` | on |
//! | `high-entropy` | runs of 32+ `[A-Za-z0-9+/_]` (and `=` padding) | min entropy | `SECRET` | off |
//!
//! Which responses, of every status (error bodies carry secrets too): JSON bodies
//! (`application/json`, `+json`) get the field rules and the detectors, matched inside string
//! values only; text bodies (`text/*`, `application/xml`, `+xml`,
//! `application/x-www-form-urlencoded`) get the detectors over the whole text. The plugin asks
//! for a body only when its plan for that kind is not empty.
//!
//! Limitations:
//! - Bodies of any other Content-Type (or none: binary, `multipart/*`, `application/octet-stream`,
//!   `application/grpc`, ...) pass unmasked. Headers are never masked.
//! - Detectors see JSON string values only: a card number written as a JSON number is not
//!   found; name its field in a field rule.
//! - Form bodies are matched as written: a percent-encoded value (`a%40b.example`) is not found.
//! - Detectors mask wherever their shape appears, URLs included: a link to an IP address
//!   (`http://10.0.0.5/next`) no longer works for the client. Turn `ipv4`/`ipv6` off for APIs
//!   that hand out such links.
//! - Each pattern's matches are leftmost and do not overlap, so a candidate that fails its
//!   check (Luhn, mod 97, entropy) can hide a real value it overlaps.
//! - Detectors are heuristics: they reduce leaks, they do not prove a body clean. Name known
//!   secret fields in field rules.
//!
//! An invalid configuration refuses the load; one that still fails at call time (it should not)
//! replaces the response with a 500 and `{"error":{"code":"mask-config",...}}`: fail closed.
//!
//! The decisions live in [`plan`] (plain functions, tested natively with `cargo test -p mask`);
//! the hooks only read the Content-Type and call them.
use std::sync::OnceLock;

use portcullis_sdk::{
    Body, Descriptor, Headers, Phases, Plugin, Replacement, Request, ResponseVerdict, host,
};

mod config;
mod detectors;
mod plan;
#[cfg(test)]
mod tests;

use config::{Config, MAX_BODY_LIMIT, parse_config};

/// The JSON Schema of the configuration (for documentation and tooling; `configure` checks
/// more, e.g. which of `label` and `keep` goes with which strategy).
const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "body_limit": {"type": "integer", "minimum": 1, "maximum": 67108864, "default": 4194304},
    "fields": {"type": "array", "maxItems": 1024, "items": {"$ref": "#/$defs/field"}},
    "detectors": {
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "private-key": {"$ref": "#/$defs/detector", "default": true},
        "jwt": {"$ref": "#/$defs/detector", "default": true},
        "azure-connection-string": {"$ref": "#/$defs/detector", "default": true},
        "sas-signature": {"$ref": "#/$defs/detector", "default": true},
        "azure-storage-key": {"$ref": "#/$defs/detector", "default": true},
        "aws-access-key": {"$ref": "#/$defs/detector", "default": true},
        "bearer-token": {"$ref": "#/$defs/detector", "default": true},
        "email": {"$ref": "#/$defs/detector", "default": true},
        "iban": {"$ref": "#/$defs/detector", "default": true},
        "phone": {"$ref": "#/$defs/detector", "default": true},
        "card": {"$ref": "#/$defs/detector", "default": true},
        "ssn": {"$ref": "#/$defs/detector", "default": false},
        "ipv4": {"$ref": "#/$defs/detector", "default": true},
        "ipv6": {"$ref": "#/$defs/detector", "default": true},
        "high-entropy": {
          "default": false,
          "oneOf": [
            {"type": "boolean"},
            {
              "type": "object",
              "additionalProperties": false,
              "properties": {
                "strategy": {"$ref": "#/$defs/strategy"},
                "label": {"$ref": "#/$defs/label"},
                "keep": {"$ref": "#/$defs/keep"},
                "min_entropy": {"type": "number", "minimum": 3.0, "maximum": 6.0, "default": 4.3}
              }
            }
          ]
        }
      }
    }
  },
  "$defs": {
    "strategy": {"enum": ["redact", "partial", "hash"], "default": "redact"},
    "label": {"type": "string", "pattern": "^[A-Z0-9_]{1,32}$"},
    "keep": {"type": "integer", "minimum": 0, "maximum": 64, "default": 4},
    "field": {
      "type": "object",
      "required": ["pointer", "kind"],
      "additionalProperties": false,
      "properties": {
        "pointer": {"type": "string", "pattern": "^(/([^~]|~[01])*)?$"},
        "kind": {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"},
        "strategy": {"$ref": "#/$defs/strategy"},
        "label": {"$ref": "#/$defs/label", "default": "REDACTED"},
        "keep": {"$ref": "#/$defs/keep"}
      }
    },
    "detector": {
      "oneOf": [
        {"type": "boolean"},
        {
          "type": "object",
          "additionalProperties": false,
          "properties": {
            "strategy": {"$ref": "#/$defs/strategy"},
            "label": {"$ref": "#/$defs/label"},
            "keep": {"$ref": "#/$defs/keep"}
          }
        }
      ]
    }
  }
}"##;

/// The error code of the fail-closed replacement.
const CONFIG_ERROR_CODE: &str = "mask-config";
/// The longest configuration error quoted in the replacement body.
const CONFIG_ERROR_MAX: usize = 512;

struct Mask;

/// The configuration, parsed at the instance's first call and kept for its life. It is the
/// operator's data, never a response's, so a reused instance (`instance = "reuse"`) keeps
/// nothing of one response for the next.
static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();

fn load() -> Result<&'static Config, ResponseVerdict> {
    CONFIG
        .get_or_init(|| parse_config(&host::config()))
        .as_ref()
        .map_err(|e| ResponseVerdict::Replace(config_failure(e)))
}

/// The response sent instead of an unmasked one when the configuration cannot be used.
fn config_failure(error: &str) -> Replacement {
    let mut message = format!("the mask plugin's configuration is invalid: {error}");
    if message.len() > CONFIG_ERROR_MAX {
        let mut end = CONFIG_ERROR_MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    let body = serde_json::json!({"error": {"code": CONFIG_ERROR_CODE, "message": message}});
    Replacement {
        status: 500,
        headers: vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("cache-control".to_string(), "no-store".to_string()),
        ],
        body: body.to_string().into_bytes(),
    }
}

/// The descriptor: fixed, whatever the configuration (the body limit asked for per response
/// is the configured one, at most this).
fn descriptor() -> Descriptor {
    Descriptor::new("mask", env!("CARGO_PKG_VERSION"), Phases::RESPONSE_HEADERS)
        .with_response_body(MAX_BODY_LIMIT, &["*/*"])
        .with_patterns(&detectors::patterns())
        .with_config_schema(CONFIG_SCHEMA)
}

impl Plugin for Mask {
    fn describe() -> Descriptor {
        descriptor()
    }

    fn configure(config: &str) -> Result<(), String> {
        parse_config(config).map(|_| ())
    }

    fn on_response(_req: &Request, _status: u16, headers: &Headers) -> ResponseVerdict {
        let config = match load() {
            Ok(c) => c,
            Err(v) => return v,
        };
        match plan::wants_body(config, headers.get("content-type").as_deref()) {
            Some(limit) => ResponseVerdict::NeedBody(limit),
            None => ResponseVerdict::Pass,
        }
    }

    fn on_response_body(
        _req: &Request,
        _status: u16,
        headers: &Headers,
        _body: &Body,
    ) -> ResponseVerdict {
        let config = match load() {
            Ok(c) => c,
            Err(v) => return v,
        };
        match plan::plan_for(config, headers.get("content-type").as_deref()) {
            Some(plan) => ResponseVerdict::Mask(plan),
            None => ResponseVerdict::Pass,
        }
    }
}

portcullis_sdk::export_plugin!(Mask);
