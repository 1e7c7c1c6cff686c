//! The operator's configuration: parsed and validated in full, every error naming where it is
//! (`default`, `rules[2] ("deny-rg-delete")`) and the field.
use serde_json::{Map, Value};

use crate::json;

/// `body_limit` when the operator sets none.
pub const DEFAULT_BODY_LIMIT: u64 = 64 * 1024;
/// The largest `body_limit` accepted.
pub const MAX_BODY_LIMIT: u64 = 16 * 1024 * 1024;
/// The deny code (and rule name in reasons) of the `default` action.
pub const DEFAULT_CODE: &str = "guard-default";
/// Longest rule id: it is the deny code, which the contract bounds to 128 bytes.
const ID_MAX: usize = 128;
/// Longest operator message.
const MESSAGE_MAX: usize = 512;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// What happens when no rule matches.
    pub default: Action,
    /// How many bytes of a request body to ask for when a rule has body predicates.
    pub body_limit: u64,
    /// The rules, in order: the first that matches decides.
    pub rules: Vec<Rule>,
}

/// What a rule (or the default) does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Let the request through.
    Allow,
    /// Refuse it.
    Deny {
        status: u16,
        message: Option<String>,
    },
    /// Hold it for approval.
    RequireApproval {
        approvers: Vec<String>,
        budget_ms: u64,
        message: Option<String>,
    },
}

impl Action {
    /// Deny and require-approval rules fail closed: where the facts are uncertain (an
    /// unreadable body, a differently-cased path, a repeated query parameter) they match.
    /// Allow rules match only on certain, exact facts.
    pub fn fails_closed(&self) -> bool {
        !matches!(self, Action::Allow)
    }
}

/// One rule. An empty list (or map) is no condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique id; the deny code.
    pub id: String,
    /// Operation globs, compared ignoring ASCII case.
    pub operations: Vec<String>,
    /// Methods, upper case.
    pub methods: Vec<String>,
    /// Path templates.
    pub paths: Vec<String>,
    /// Query parameter name -> glob on the percent-decoded value.
    pub query: Vec<(String, String)>,
    /// Header name (lower case) -> glob on the value.
    pub headers: Vec<(String, String)>,
    /// JSON body predicates, all of which must hold.
    pub body: Vec<Predicate>,
    /// Conditions on the caller; `Some` requires an authenticated caller.
    pub principal: Option<PrincipalCondition>,
    /// What the rule does when it matches.
    pub action: Action,
}

/// A test on the values a JSON pointer leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    /// The pointer as written.
    pub pointer: String,
    /// Its unescaped segments (`*` is a wildcard).
    pub segments: Vec<String>,
    /// The test.
    pub test: Test,
}

/// The test of a body predicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// JSON equality.
    Equals(Value),
    /// Equal to one of these.
    In(Vec<Value>),
    /// A string value matching this glob.
    Matches(String),
}

/// Conditions on the principal: each non-empty list must contain one of the caller's values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrincipalCondition {
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub app_ids: Vec<String>,
    pub tenants: Vec<String>,
    pub subjects: Vec<String>,
    pub scopes: Vec<String>,
}

const TOP_FIELDS: &[&str] = &["default", "body_limit", "rules"];
const ACTION_FIELDS: &[&str] = &["action", "status", "message", "approvers", "budget_ms"];
const RULE_FIELDS: &[&str] = &[
    "id",
    "operations",
    "methods",
    "paths",
    "query",
    "headers",
    "body",
    "principal",
    "action",
    "status",
    "message",
    "approvers",
    "budget_ms",
];
const PREDICATE_FIELDS: &[&str] = &["pointer", "equals", "in", "matches"];
const PRINCIPAL_FIELDS: &[&str] = &[
    "roles", "groups", "app_ids", "tenants", "subjects", "scopes",
];

/// Parse and validate the configuration.
pub fn parse_config(text: &str) -> Result<Config, String> {
    let value =
        json::parse_unambiguous(text).map_err(|e| format!("config is not valid JSON: {e}"))?;
    let Value::Object(top) = value else {
        return Err("config must be a JSON object".to_string());
    };
    let at = "config";
    known_fields(&top, TOP_FIELDS, at)?;
    let default = match top.get("default") {
        None => {
            return Err(format!(
                "{at}: field `default` is required (\"allow\", \"deny\" or an action object)"
            ));
        }
        Some(v) => parse_default(v)?,
    };
    let body_limit = match top.get("body_limit") {
        None => DEFAULT_BODY_LIMIT,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_BODY_LIMIT).contains(&n) => n,
            _ => {
                return Err(format!(
                    "{at}: field `body_limit` must be an integer in 1..={MAX_BODY_LIMIT}, got {v}"
                ));
            }
        },
    };
    let rules = match top.get("rules") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_rule(i, item))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(format!("{at}: field `rules` must be a list of rules")),
    };
    for (i, rule) in rules.iter().enumerate() {
        if let Some(first) = rules[..i].iter().position(|r| r.id == rule.id) {
            return Err(format!(
                "rules[{i}] ({:?}): field `id`: duplicate of rules[{first}]",
                rule.id
            ));
        }
    }
    Ok(Config {
        default,
        body_limit,
        rules,
    })
}

/// The `body_limit` of a configuration, or the default when it is missing or invalid (the
/// descriptor is built before `configure` refuses a bad configuration).
pub fn body_limit_of(text: &str) -> u64 {
    parse_config(text).map_or(DEFAULT_BODY_LIMIT, |c| c.body_limit)
}

fn parse_default(value: &Value) -> Result<Action, String> {
    let at = "default";
    match value {
        Value::String(s) if s == "allow" => Ok(Action::Allow),
        Value::String(s) if s == "deny" => Ok(Action::Deny {
            status: 403,
            message: None,
        }),
        Value::String(s) if s == "require-approval" => Err(format!(
            "{at}: require-approval needs `approvers` and `budget_ms`: write it as an object \
             {{\"action\":\"require-approval\",\"approvers\":[...],\"budget_ms\":...}}"
        )),
        Value::Object(obj) => {
            known_fields(obj, ACTION_FIELDS, at)?;
            parse_action(obj, at)
        }
        other => Err(format!(
            "{at}: must be \"allow\", \"deny\" or an action object, got {other}"
        )),
    }
}

/// The action fields of a rule or of the `default` object.
fn parse_action(obj: &Map<String, Value>, at: &str) -> Result<Action, String> {
    let name = match obj.get("action") {
        None => {
            return Err(format!(
                "{at}: field `action` is required (\"allow\", \"deny\" or \"require-approval\")"
            ));
        }
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(format!(
                "{at}: field `action` must be \"allow\", \"deny\" or \"require-approval\", got {other}"
            ));
        }
    };
    let only_for = |field: &str, action: &str| -> Result<(), String> {
        if obj.contains_key(field) {
            Err(format!(
                "{at}: field `{field}` applies only to action \"{action}\", not \"{name}\""
            ))
        } else {
            Ok(())
        }
    };
    match name {
        "allow" => {
            only_for("status", "deny")?;
            if obj.contains_key("message") {
                return Err(format!(
                    "{at}: field `message` applies only to \"deny\" and \"require-approval\""
                ));
            }
            only_for("approvers", "require-approval")?;
            only_for("budget_ms", "require-approval")?;
            Ok(Action::Allow)
        }
        "deny" => {
            only_for("approvers", "require-approval")?;
            only_for("budget_ms", "require-approval")?;
            let status = match obj.get("status") {
                None => 403,
                Some(v) => match v.as_u64() {
                    Some(n @ 400..=599) => n as u16,
                    _ => {
                        return Err(format!(
                            "{at}: field `status` must be an integer in 400..=599, got {v}"
                        ));
                    }
                },
            };
            Ok(Action::Deny {
                status,
                message: message(obj, at)?,
            })
        }
        "require-approval" => {
            only_for("status", "deny")?;
            let approvers = match obj.get("approvers") {
                None => {
                    return Err(format!(
                        "{at}: field `approvers` is required for require-approval (approver groups)"
                    ));
                }
                Some(v) => strings(v, at, "approvers")?,
            };
            if approvers.is_empty() {
                return Err(format!(
                    "{at}: field `approvers` must list at least one approver group"
                ));
            }
            let budget_ms = match obj.get("budget_ms") {
                None => {
                    return Err(format!(
                        "{at}: field `budget_ms` is required for require-approval (milliseconds)"
                    ));
                }
                Some(v) => v.as_u64().ok_or_else(|| {
                    format!("{at}: field `budget_ms` must be a non-negative integer, got {v}")
                })?,
            };
            Ok(Action::RequireApproval {
                approvers,
                budget_ms,
                message: message(obj, at)?,
            })
        }
        other => Err(format!(
            "{at}: field `action` must be \"allow\", \"deny\" or \"require-approval\", got {other:?}"
        )),
    }
}

fn message(obj: &Map<String, Value>, at: &str) -> Result<Option<String>, String> {
    match obj.get("message") {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MESSAGE_MAX => {
            Ok(Some(s.clone()))
        }
        Some(v) => Err(format!(
            "{at}: field `message` must be a non-empty string of at most {MESSAGE_MAX} bytes, got {v}"
        )),
    }
}

fn parse_rule(index: usize, value: &Value) -> Result<Rule, String> {
    let Value::Object(obj) = value else {
        return Err(format!("rules[{index}]: must be an object, got {value}"));
    };
    let id = match obj.get("id") {
        None => return Err(format!("rules[{index}]: field `id` is required")),
        Some(Value::String(s)) if valid_id(s) => s.clone(),
        Some(v) => {
            return Err(format!(
                "rules[{index}]: field `id` must be 1-{ID_MAX} characters of A-Z, a-z, 0-9, \
                 '-', '_', '.' and ':', got {v}"
            ));
        }
    };
    let at = format!("rules[{index}] ({id:?})");
    if id == DEFAULT_CODE {
        return Err(format!(
            "{at}: field `id`: {DEFAULT_CODE:?} is reserved for the default action"
        ));
    }
    known_fields(obj, RULE_FIELDS, &at)?;
    let action = parse_action(obj, &at)?;

    let list = |field: &str| -> Result<Vec<String>, String> {
        obj.get(field)
            .map_or(Ok(Vec::new()), |v| strings(v, &at, field))
    };
    let operations = list("operations")?;
    let methods = list("methods")?;
    if let Some(m) = methods.iter().find(|m| !valid_method(m)) {
        return Err(format!(
            "{at}: field `methods`: {m:?} must be an upper-case HTTP method"
        ));
    }
    let paths = list("paths")?;
    for p in &paths {
        check_path_template(p).map_err(|e| format!("{at}: field `paths`: {p:?} {e}"))?;
    }
    let query = globs_by_name(obj.get("query"), &at, "query")?;
    let mut headers = globs_by_name(obj.get("headers"), &at, "headers")?;
    for (name, _) in &mut headers {
        if !name.bytes().all(is_token_byte) {
            return Err(format!(
                "{at}: field `headers`: {name:?} is not a valid header name"
            ));
        }
        *name = name.to_ascii_lowercase();
    }
    let body = match obj.get("body") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, p)| parse_predicate(p, &format!("{at}: field `body[{i}]`")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(v) => {
            return Err(format!(
                "{at}: field `body` must be a list of predicates, got {v}"
            ));
        }
    };
    let principal = match obj.get("principal") {
        None => None,
        Some(Value::Object(p)) => {
            let at = format!("{at}: field `principal`");
            known_fields(p, PRINCIPAL_FIELDS, &at)?;
            let list = |field: &str| -> Result<Vec<String>, String> {
                p.get(field)
                    .map_or(Ok(Vec::new()), |v| strings(v, &at, field))
            };
            Some(PrincipalCondition {
                roles: list("roles")?,
                groups: list("groups")?,
                app_ids: list("app_ids")?,
                tenants: list("tenants")?,
                subjects: list("subjects")?,
                scopes: list("scopes")?,
            })
        }
        Some(v) => {
            return Err(format!(
                "{at}: field `principal` must be an object of lists, got {v}"
            ));
        }
    };
    Ok(Rule {
        id,
        operations,
        methods,
        paths,
        query,
        headers,
        body,
        principal,
        action,
    })
}

fn parse_predicate(value: &Value, at: &str) -> Result<Predicate, String> {
    let Value::Object(obj) = value else {
        return Err(format!("{at} must be an object, got {value}"));
    };
    known_fields(obj, PREDICATE_FIELDS, at)?;
    let pointer = match obj.get("pointer") {
        None => return Err(format!("{at}: field `pointer` is required")),
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(format!("{at}: field `pointer` must be a string, got {v}")),
    };
    let segments = portcullis_sdk::pointer::split(&pointer).ok_or_else(|| {
        format!("{at}: field `pointer`: {pointer:?} is not a JSON pointer (RFC 6901, e.g. \"/properties/name\")")
    })?;
    let tests: Vec<&str> = ["equals", "in", "matches"]
        .into_iter()
        .filter(|t| obj.contains_key(*t))
        .collect();
    if tests.len() != 1 {
        return Err(format!(
            "{at}: needs exactly one of `equals`, `in`, `matches`, got {}",
            if tests.is_empty() {
                "none".to_string()
            } else {
                tests
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            }
        ));
    }
    let test = match tests[0] {
        "equals" => Test::Equals(obj["equals"].clone()),
        "in" => match &obj["in"] {
            Value::Array(items) if !items.is_empty() => Test::In(items.clone()),
            v => {
                return Err(format!(
                    "{at}: field `in` must be a non-empty list of values, got {v}"
                ));
            }
        },
        _ => match &obj["matches"] {
            Value::String(glob) => Test::Matches(glob.clone()),
            v => {
                return Err(format!(
                    "{at}: field `matches` must be a glob string, got {v}"
                ));
            }
        },
    };
    Ok(Predicate {
        pointer,
        segments,
        test,
    })
}

fn known_fields(obj: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), String> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{at}: unknown field `{k}` (expected one of: {})",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// A list of non-empty strings.
fn strings(value: &Value, at: &str, field: &str) -> Result<Vec<String>, String> {
    let bad = || format!("{at}: field `{field}` must be a list of non-empty strings, got {value}");
    let Value::Array(items) = value else {
        return Err(bad());
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err(bad()),
        })
        .collect()
}

/// An object of non-empty names to glob strings.
fn globs_by_name(
    value: Option<&Value>,
    at: &str,
    field: &str,
) -> Result<Vec<(String, String)>, String> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, glob)| match glob {
                Value::String(g) if !name.is_empty() => Ok((name.clone(), g.clone())),
                _ => Err(format!(
                    "{at}: field `{field}`: {name:?} must be a non-empty name mapped to a glob string, got {glob}"
                )),
            })
            .collect(),
        Some(v) => Err(format!(
            "{at}: field `{field}` must be an object of name -> glob, got {v}"
        )),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn valid_method(m: &str) -> bool {
    !m.is_empty()
        && m.bytes()
            .all(|b| is_token_byte(b) && !b.is_ascii_lowercase())
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_path_template(template: &str) -> Result<(), &'static str> {
    if !template.starts_with('/') {
        return Err("must start with '/'");
    }
    if template.contains('?') {
        return Err("must not contain a query ('?'): use `query`");
    }
    let segments: Vec<&str> = template[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, s) in segments.iter().enumerate() {
        if *s == "**" && i != last {
            return Err("may use `**` only as its last segment");
        }
        if s.contains('*') && *s != "*" && *s != "**" {
            return Err("may use `*` and `**` only as whole segments (they are not globs)");
        }
        if (s.starts_with('{') || s.ends_with('}'))
            && (s.len() < 3 || !s.starts_with('{') || !s.ends_with('}'))
        {
            return Err("has a malformed `{name}` segment");
        }
    }
    Ok(())
}
