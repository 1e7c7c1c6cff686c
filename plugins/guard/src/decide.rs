//! The policy: a pure function of the configuration, the request's facts and (in the body
//! phase) its body.
use std::collections::BTreeMap;

use portcullis_sdk::Principal;
use portcullis_sdk::matching::{glob, glob_ignore_case, path_template};
use serde_json::Value;

use crate::config::{Action, Config, DEFAULT_CODE, PrincipalCondition, Rule, Test};
use crate::json;

/// The contract's bound on a deny reason.
const REASON_MAX: usize = 1024;
/// The contract's bound on an approval summary.
const SUMMARY_MAX: usize = 4096;

/// What the hooks gathered about the request.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Method, upper case.
    pub method: &'a str,
    /// Path and query as received.
    pub path_and_query: &'a str,
    /// The operation the host derived.
    pub operation: &'a str,
    /// The authenticated caller, if any.
    pub principal: Option<&'a Principal>,
    /// Values of the headers the rules name, by lower-case name.
    pub headers: &'a BTreeMap<String, Vec<String>>,
}

/// The request body, as far as the decision is concerned.
#[derive(Debug, Clone, Copy)]
pub enum BodyInput<'a> {
    /// Header phase, and the host will offer the body (its type is JSON): a rule with body
    /// predicates asks for it.
    Pending,
    /// No usable body: absent, of a type the host does not offer, not UTF-8, not valid (or
    /// ambiguous) JSON. Body predicates hold for deny and require-approval rules (fail
    /// closed) and not for allow rules.
    Unusable,
    /// The parsed body.
    Json(&'a Value),
}

/// The outcome, mirrored one to one by a request verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow,
    NeedBody(u64),
    Deny {
        status: u16,
        code: String,
        reason: String,
    },
    RequireApproval {
        summary: String,
        approvers: Vec<String>,
        budget_ms: u64,
    },
}

/// Walk the rules in order; the first whose conditions all hold decides, else the default.
pub fn decide(config: &Config, facts: &Facts<'_>, body: BodyInput<'_>) -> Decision {
    let (path, query) = split_target(facts.path_and_query);
    let params = parse_query(query);
    for rule in &config.rules {
        let lenient = rule.action.fails_closed();
        if !request_matches(rule, facts, path, &params, lenient) {
            continue;
        }
        if !rule.body.is_empty() {
            let holds = match body {
                BodyInput::Pending => return Decision::NeedBody(config.body_limit),
                BodyInput::Unusable => lenient,
                BodyInput::Json(doc) => rule.body.iter().all(|p| {
                    let found = json::resolve(doc, &p.segments, lenient);
                    let test = |v: &&Value| value_passes(&p.test, v, lenient);
                    if lenient {
                        found.iter().any(test)
                    } else {
                        !found.is_empty() && found.iter().all(test)
                    }
                }),
            };
            if !holds {
                continue;
            }
        }
        return outcome(&rule.action, &rule.id, facts.operation);
    }
    outcome(&config.default, DEFAULT_CODE, facts.operation)
}

/// Whether the host will offer a body of this `Content-Type` to a plugin that declared
/// `application/json` (the host's rule: parameters ignored, compared ignoring case).
pub fn json_offered(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
    })
}

/// The header names (lower case) any rule looks at.
pub fn header_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .rules
        .iter()
        .flat_map(|r| r.headers.iter().map(|(n, _)| n.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every non-body condition of `rule`. `lenient` (deny and require-approval rules): strings
/// compare ignoring ASCII case and one matching value of a repeated parameter or header is
/// enough. Strict (allow rules): exact, and every value must match.
fn request_matches(
    rule: &Rule,
    facts: &Facts<'_>,
    path: &str,
    params: &[(String, Option<String>)],
    lenient: bool,
) -> bool {
    let text = |pattern: &str, value: &str| {
        if lenient {
            glob_ignore_case(pattern, value)
        } else {
            glob(pattern, value)
        }
    };
    let multi = |pattern: &str, values: &[Option<&str>]| {
        if values.is_empty() {
            false
        } else if lenient {
            // A value that cannot be decoded might be anything: it matches (fail closed).
            values.iter().any(|v| v.is_none_or(|v| text(pattern, v)))
        } else {
            values.iter().all(|v| v.is_some_and(|v| text(pattern, v)))
        }
    };

    (rule.operations.is_empty()
        || rule
            .operations
            .iter()
            .any(|o| glob_ignore_case(o, facts.operation)))
        && (rule.methods.is_empty()
            || rule.methods.iter().any(|m| {
                if lenient {
                    m.eq_ignore_ascii_case(facts.method)
                } else {
                    m == facts.method
                }
            }))
        && (rule.paths.is_empty() || rule.paths.iter().any(|t| path_matches(t, path, lenient)))
        && rule.query.iter().all(|(name, pattern)| {
            let values: Vec<Option<&str>> = params
                .iter()
                .filter(|(n, _)| {
                    if lenient {
                        n.eq_ignore_ascii_case(name)
                    } else {
                        n == name
                    }
                })
                .map(|(_, v)| v.as_deref())
                .collect();
            multi(pattern, &values)
        })
        && rule.headers.iter().all(|(name, pattern)| {
            let values: Vec<Option<&str>> = facts
                .headers
                .get(name)
                .map(|vs| vs.iter().map(|v| Some(v.as_str())).collect())
                .unwrap_or_default();
            multi(pattern, &values)
        })
        && rule
            .principal
            .as_ref()
            .is_none_or(|cond| principal_matches(cond, facts.principal, lenient))
}

/// A path template against the request path. Percent-escapes of unreserved characters are
/// decoded first (`%41` is `A`, RFC 3986 §6.2.2.2) in both; lenient also ignores ASCII case
/// (Azure Resource Manager paths are case-insensitive).
fn path_matches(template: &str, path: &str, lenient: bool) -> bool {
    let (mut template, mut path) = (decode_unreserved(template), decode_unreserved(path));
    if lenient {
        template.make_ascii_lowercase();
        path.make_ascii_lowercase();
    }
    path_template(&template, &path).is_some()
}

fn principal_matches(
    cond: &PrincipalCondition,
    principal: Option<&Principal>,
    lenient: bool,
) -> bool {
    let Some(p) = principal else {
        return false;
    };
    let eq = |a: &str, b: &str| {
        if lenient {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let any_of = |wanted: &[String], have: &[&str]| {
        wanted.is_empty() || wanted.iter().any(|w| have.iter().any(|h| eq(w, h)))
    };
    // An incomplete group list (token group overage): the caller may be in any group. A deny
    // or require-approval rule's group condition then holds (fail closed); an allow rule's
    // never does.
    let groups = cond.groups.is_empty()
        || if p.groups_complete {
            any_of(&cond.groups, &strs(&p.groups))
        } else {
            lenient
        };
    groups
        && any_of(&cond.roles, &strs(&p.roles))
        && any_of(&cond.scopes, &strs(&p.scopes))
        && any_of(&cond.subjects, &[p.subject.as_str()])
        && any_of(&cond.app_ids, p.app_id.as_deref().as_slice())
        && any_of(&cond.tenants, p.tenant.as_deref().as_slice())
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn value_passes(test: &Test, value: &Value, lenient: bool) -> bool {
    match test {
        Test::Equals(expected) => json::equal(value, expected, lenient),
        Test::In(options) => options.iter().any(|o| json::equal(value, o, lenient)),
        Test::Matches(pattern) => value.as_str().is_some_and(|s| {
            if lenient {
                glob_ignore_case(pattern, s)
            } else {
                glob(pattern, s)
            }
        }),
    }
}

fn outcome(action: &Action, id: &str, operation: &str) -> Decision {
    let tail = format!(" (rule {id})");
    match action {
        Action::Allow => Decision::Allow,
        Action::Deny { status, message } => {
            let head = match message {
                Some(m) => m.clone(),
                None => format!("{operation} is not allowed"),
            };
            Decision::Deny {
                status: *status,
                code: id.to_string(),
                reason: bounded(head, &tail, REASON_MAX),
            }
        }
        Action::RequireApproval {
            approvers,
            budget_ms,
            message,
        } => {
            let head = match message {
                Some(m) => format!("{m}: {operation}"),
                None => format!("{operation} requires approval"),
            };
            Decision::RequireApproval {
                summary: bounded(head, &tail, SUMMARY_MAX),
                approvers: approvers.clone(),
                budget_ms: *budget_ms,
            }
        }
    }
}

/// `head` + `tail`, `head` shortened (on a character boundary, marked with `…`) to fit `max`
/// bytes.
fn bounded(mut head: String, tail: &str, max: usize) -> String {
    if head.len() + tail.len() > max {
        let mut cut = max.saturating_sub(tail.len() + '…'.len_utf8());
        while !head.is_char_boundary(cut) {
            cut -= 1;
        }
        head.truncate(cut);
        head.push('…');
    }
    head + tail
}

fn split_target(path_and_query: &str) -> (&str, &str) {
    path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""))
}

/// Query parameters as (name, value), both percent-decoded; a value that does not decode to
/// UTF-8 is `None`. A parameter without `=` has the empty value. `+` is left as it is.
fn parse_query(query: &str) -> Vec<(String, Option<String>)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(name)?, percent_decode(value)))
        })
        .collect()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The byte a `%XX` escape at `bytes[i]` stands for, if there is one.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    if bytes.get(i) != Some(&b'%') {
        return None;
    }
    Some(hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?)
}

/// Decode `%XX` escapes; a `%` not followed by two hex digits stays as it is. `None` if the
/// result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(c) = escape_at(bytes, i) {
            out.push(c);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decode only the escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`), which mean the
/// same escaped or not; every other escape (`%2F`, `%20`, …) stays.
fn decode_unreserved(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(c) = escape_at(bytes, i)
            && (c.is_ascii_alphanumeric() || b"-._~".contains(&c))
        {
            out.push(c as char);
            i += 3;
            continue;
        }
        // Copy one character (the input is a &str: stay on character boundaries).
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}
