//! `guard`: rule-based command blocking. Ordered rules over the request's operation, method,
//! path, query, headers, JSON body and caller deny it, let it through, or hold it for a human's
//! approval; the first rule that matches decides, and `default` decides when none does.
//!
//! Operator configuration (JSON, from the gateway's TOML), validated in full by `configure`:
//! ```json
//! {
//!   "default": "allow",
//!   "body_limit": 65536,
//!   "rules": [
//!     {"id": "deny-rg-delete",
//!      "operations": ["Microsoft.Resources/subscriptions/resourceGroups/delete"],
//!      "principal": {"roles": ["agent"]},
//!      "action": "deny", "status": 403,
//!      "message": "Deleting resource groups is not allowed for agents"},
//!     {"id": "approve-owner-grants",
//!      "operations": ["Microsoft.Authorization/roleAssignments/write"],
//!      "body": [{"pointer": "/properties/roleDefinitionId",
//!                "matches": "*/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635"}],
//!      "action": "require-approval", "approvers": ["cloud-admins"], "budget_ms": 300000}
//!   ]
//! }
//! ```
//!
//! - `default` (required): `"allow"`, `"deny"` (403), or an object with `action` and the
//!   action's fields, e.g. `{"action":"deny","status":451,"message":"..."}` or
//!   `{"action":"require-approval","approvers":["g"],"budget_ms":300000}`. Its deny code is
//!   `guard-default`.
//! - `body_limit`: bytes of a request body to ask for (1..=16 MiB, default 65536); only
//!   `application/json` bodies are offered by the host.
//! - `rules[]`: `id` (required, unique, `[A-Za-z0-9._:-]{1,128}`, the deny code), `action`
//!   (required: `allow`, `deny`, `require-approval`), `status` (deny only, 400..=599, default
//!   403), `message` (deny and require-approval), `approvers` + `budget_ms` (require-approval
//!   only, both required), and conditions, each optional (omitted or empty: any):
//!   - `operations`: globs on the host's operation, always compared ignoring ASCII case;
//!   - `methods`: upper-case methods;
//!   - `paths`: SDK path templates (`/subscriptions/{sub}/resourceGroups/{rg}`, `*`, final
//!     `**`) on the path (query ignored);
//!   - `query`: name → glob on the percent-decoded value; the parameter must be present;
//!   - `headers`: name (any case) → glob on the value; the header must be present;
//!   - `body`: JSON pointer predicates, all must hold, each with exactly one of `equals`
//!     (JSON equality), `in` (a list of values), `matches` (a glob on a string value); a `*`
//!     pointer segment stands for every member or element;
//!   - `principal`: `roles`, `groups`, `app_ids`, `tenants`, `subjects`, `scopes`, each a list
//!     of which the caller must have one value; present at all, it requires an authenticated
//!     caller. When the token's group list is incomplete (Entra group overage), a `groups`
//!     condition holds for deny and require-approval rules and never for allow rules.
//!
//! Deny and require-approval rules fail closed; allow rules match only on exact facts:
//!
//! | | deny, require-approval | allow |
//! |---|---|---|
//! | paths, query names and values, header values, principal values, body strings, body member names | compared ignoring ASCII case | exact |
//! | a repeated query parameter or header, a `*` pointer segment | one value matching is enough | every value must match |
//! | a body that is absent, not offered (not JSON), not UTF-8, invalid or ambiguous (a member name twice, in any case) | body predicates hold | body predicates do not hold |
//! | a token whose groups were elided (overage) | `groups` holds | `groups` does not hold |
//!
//! At header time a rule whose other conditions hold but which has body predicates makes the
//! plugin ask for the body (`need-body`); the body hook then walks all rules again with it.
//!
//! The decision lives in [`decide::decide`], a plain function tested natively with
//! `cargo test -p guard`; the hooks only gather inputs from the host and call it.
use std::collections::BTreeMap;
use std::sync::OnceLock;

use portcullis_sdk::{Body, Descriptor, Headers, Phases, Plugin, Request, RequestVerdict, host};

mod config;
mod decide;
mod json;
#[cfg(test)]
mod tests;

use config::{Config, body_limit_of, parse_config};
use decide::{BodyInput, Decision, Facts, decide, header_names, json_offered};

/// The JSON Schema of the configuration (for documentation and tooling; `configure` checks
/// more, e.g. unique ids and which fields go with which action).
const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["default"],
  "additionalProperties": false,
  "properties": {
    "default": {
      "oneOf": [
        {"enum": ["allow", "deny"]},
        {"$ref": "#/$defs/action"}
      ]
    },
    "body_limit": {"type": "integer", "minimum": 1, "maximum": 16777216, "default": 65536},
    "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}}
  },
  "$defs": {
    "strings": {"type": "array", "items": {"type": "string", "minLength": 1}},
    "globs": {"type": "object", "additionalProperties": {"type": "string"}},
    "action": {
      "type": "object",
      "required": ["action"],
      "additionalProperties": false,
      "properties": {
        "action": {"enum": ["allow", "deny", "require-approval"]},
        "status": {"type": "integer", "minimum": 400, "maximum": 599, "default": 403},
        "message": {"type": "string", "minLength": 1, "maxLength": 512},
        "approvers": {"$ref": "#/$defs/strings", "minItems": 1},
        "budget_ms": {"type": "integer", "minimum": 0}
      }
    },
    "predicate": {
      "type": "object",
      "required": ["pointer"],
      "additionalProperties": false,
      "properties": {
        "pointer": {"type": "string"},
        "equals": {},
        "in": {"type": "array", "minItems": 1},
        "matches": {"type": "string"}
      },
      "oneOf": [
        {"required": ["equals"]},
        {"required": ["in"]},
        {"required": ["matches"]}
      ]
    },
    "rule": {
      "type": "object",
      "required": ["id", "action"],
      "additionalProperties": false,
      "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
        "operations": {"$ref": "#/$defs/strings"},
        "methods": {"$ref": "#/$defs/strings"},
        "paths": {"$ref": "#/$defs/strings"},
        "query": {"$ref": "#/$defs/globs"},
        "headers": {"$ref": "#/$defs/globs"},
        "body": {"type": "array", "items": {"$ref": "#/$defs/predicate"}},
        "principal": {
          "type": "object",
          "additionalProperties": false,
          "properties": {
            "roles": {"$ref": "#/$defs/strings"},
            "groups": {"$ref": "#/$defs/strings"},
            "app_ids": {"$ref": "#/$defs/strings"},
            "tenants": {"$ref": "#/$defs/strings"},
            "subjects": {"$ref": "#/$defs/strings"},
            "scopes": {"$ref": "#/$defs/strings"}
          }
        },
        "action": {"enum": ["allow", "deny", "require-approval"]},
        "status": {"type": "integer", "minimum": 400, "maximum": 599, "default": 403},
        "message": {"type": "string", "minLength": 1, "maxLength": 512},
        "approvers": {"$ref": "#/$defs/strings", "minItems": 1},
        "budget_ms": {"type": "integer", "minimum": 0}
      }
    }
  }
}"##;

struct Guard;

/// The configuration, parsed at the instance's first call and kept for its life. It is the
/// operator's data, never a request's, so a reused instance (`instance = "reuse"`, worth it for
/// large rule sets) keeps nothing of one request for the next.
static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();

fn load() -> Result<&'static Config, RequestVerdict> {
    CONFIG
        .get_or_init(|| parse_config(&host::config()))
        .as_ref()
        .map_err(|e| RequestVerdict::deny(500, "guard-config", e))
}

/// The values of the headers the rules look at.
fn gather_headers(config: &Config, headers: &Headers) -> BTreeMap<String, Vec<String>> {
    header_names(config)
        .into_iter()
        .map(|name| {
            let values = headers.get_all(&name);
            (name, values)
        })
        .collect()
}

fn facts<'a>(req: &'a Request, headers: &'a BTreeMap<String, Vec<String>>) -> Facts<'a> {
    Facts {
        method: &req.method,
        path_and_query: &req.path_and_query,
        operation: &req.operation,
        principal: req.principal.as_ref(),
        headers,
    }
}

fn verdict(decision: Decision) -> RequestVerdict {
    match decision {
        Decision::Allow => RequestVerdict::Allow,
        Decision::NeedBody(limit) => RequestVerdict::NeedBody(limit),
        Decision::Deny {
            status,
            code,
            reason,
        } => RequestVerdict::deny(status, &code, &reason),
        Decision::RequireApproval {
            summary,
            approvers,
            budget_ms,
        } => {
            let approvers: Vec<&str> = approvers.iter().map(String::as_str).collect();
            RequestVerdict::require_approval(&summary, &approvers, budget_ms)
        }
    }
}

impl Plugin for Guard {
    fn describe() -> Descriptor {
        Descriptor::new("guard", env!("CARGO_PKG_VERSION"), Phases::REQUEST_HEADERS)
            .with_request_body(body_limit_of(&host::config()), &["application/json"])
            .with_config_schema(CONFIG_SCHEMA)
    }

    fn configure(config: &str) -> Result<(), String> {
        parse_config(config).map(|_| ())
    }

    fn on_request(req: &Request, headers: &Headers) -> RequestVerdict {
        let config = match load() {
            Ok(c) => c,
            Err(v) => return v,
        };
        let values = gather_headers(config, headers);
        // A body the host will not offer can never be read: decide now, as if it were absent.
        let body = if json_offered(headers.get("content-type").as_deref()) {
            BodyInput::Pending
        } else {
            BodyInput::Unusable
        };
        verdict(decide(config, &facts(req, &values), body))
    }

    fn on_request_body(req: &Request, headers: &Headers, body: &Body) -> RequestVerdict {
        let config = match load() {
            Ok(c) => c,
            Err(v) => return v,
        };
        let values = gather_headers(config, headers);
        let parsed = body
            .text()
            .ok()
            .and_then(|text| json::parse_unambiguous(&text).ok());
        let input = parsed.as_ref().map_or(BodyInput::Unusable, BodyInput::Json);
        verdict(decide(config, &facts(req, &values), input))
    }
}

portcullis_sdk::export_plugin!(Guard);
