//! The operator's configuration: parsed and validated in full, every error naming where it is
//! (`fields[2]`, `detectors.phone`) and the field. Unknown fields, unknown detectors and a
//! member name given twice are refused.

use serde_json::{Map, Value};

use crate::detectors::{self, CheckKind, DETECTORS};

/// `body_limit` when the operator sets none.
pub const DEFAULT_BODY_LIMIT: u64 = 4 * 1024 * 1024;
/// The largest `body_limit` accepted, and the descriptor's response body limit.
pub const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;
/// The label of a field rule's `redact` or `hash` when it sets none.
pub const DEFAULT_FIELD_LABEL: &str = "REDACTED";
/// `keep` of `partial` when it is not set.
pub const DEFAULT_KEEP: u32 = 4;
/// The largest `keep`.
pub const MAX_KEEP: u32 = 64;
/// The high-entropy detector's threshold when the operator sets none (bits per character).
pub const DEFAULT_MIN_ENTROPY: f32 = 4.3;
// Hex (a SHA-256 digest) has at most log2(16) = 4 bits per character: the default threshold
// must stay above it.
const _: () = assert!(DEFAULT_MIN_ENTROPY > 4.0);
/// The range of `min_entropy`.
pub const MIN_ENTROPY_RANGE: (f64, f64) = (3.0, 6.0);
/// Most field rules (the host takes at most 4096 edits per plan, detectors included).
pub const MAX_FIELDS: usize = 1024;
/// Longest `kind` (the contract bounds a finding kind to 64 bytes).
const KIND_MAX: usize = 64;
/// Longest label.
const LABEL_MAX: usize = 32;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How many bytes of a response body to ask for.
    pub body_limit: u64,
    /// Field rules, in order (JSON bodies only).
    pub fields: Vec<FieldRule>,
    /// One entry per detector of [`DETECTORS`], in table order: `None` when it is off.
    pub detectors: Vec<Option<DetectorRule>>,
}

/// Mask every value a JSON pointer reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRule {
    /// RFC 6901, `*` segments as wildcards.
    pub pointer: String,
    /// The finding kind.
    pub kind: String,
    /// How the values are rewritten.
    pub masking: Masking,
}

/// How an enabled detector masks.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorRule {
    /// How the matches are rewritten.
    pub masking: Masking,
    /// The host's test of each match.
    pub check: Check,
}

/// A masking strategy (the host's `strategy`).
#[derive(Debug, Clone, PartialEq)]
pub enum Masking {
    /// `[LABEL]`.
    Redact(String),
    /// Keep the last n characters.
    Partial(u32),
    /// `[LABEL:hash]`.
    Hash(String),
}

/// The host's test of a match (the contract's `check`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    None,
    Luhn,
    Iban,
    MinEntropy(f32),
}

const TOP_FIELDS: &[&str] = &["body_limit", "fields", "detectors"];
const FIELD_FIELDS: &[&str] = &["pointer", "kind", "strategy", "label", "keep"];
const DETECTOR_FIELDS: &[&str] = &["strategy", "label", "keep"];
const HIGH_ENTROPY_FIELDS: &[&str] = &["strategy", "label", "keep", "min_entropy"];

impl Default for Config {
    /// The configuration `{}`: default body limit, no field rules, default detectors.
    fn default() -> Self {
        Config {
            body_limit: DEFAULT_BODY_LIMIT,
            fields: Vec::new(),
            detectors: DETECTORS
                .iter()
                .map(|d| d.default_on.then(|| default_rule(d)))
                .collect(),
        }
    }
}

/// A detector on with its defaults: `redact` with its label, its check.
fn default_rule(d: &detectors::Detector) -> DetectorRule {
    DetectorRule {
        masking: Masking::Redact(d.label.to_string()),
        check: check_of(d.check, DEFAULT_MIN_ENTROPY),
    }
}

fn check_of(kind: CheckKind, min_entropy: f32) -> Check {
    match kind {
        CheckKind::None => Check::None,
        CheckKind::Luhn => Check::Luhn,
        CheckKind::Iban => Check::Iban,
        CheckKind::MinEntropy => Check::MinEntropy(min_entropy),
    }
}

/// Parse and validate the configuration.
pub fn parse_config(text: &str) -> Result<Config, String> {
    let value = portcullis_sdk::json::parse_unambiguous(text)
        .map_err(|e| format!("config is not valid JSON: {e}"))?;
    let Value::Object(top) = value else {
        return Err("config must be a JSON object".to_string());
    };
    let at = "config";
    known_fields(&top, TOP_FIELDS, at)?;
    let mut config = Config::default();
    if let Some(v) = top.get("body_limit") {
        config.body_limit = match v.as_u64() {
            Some(n) if (1..=MAX_BODY_LIMIT).contains(&n) => n,
            _ => {
                return Err(format!(
                    "{at}: field `body_limit` must be an integer in 1..={MAX_BODY_LIMIT} (bytes), got {v}"
                ));
            }
        };
    }
    match top.get("fields") {
        None => {}
        Some(Value::Array(items)) => {
            if items.len() > MAX_FIELDS {
                return Err(format!(
                    "{at}: field `fields` has {} rules (at most {MAX_FIELDS})",
                    items.len()
                ));
            }
            config.fields = items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_field(item, &format!("fields[{i}]")))
                .collect::<Result<_, _>>()?;
        }
        Some(v) => {
            return Err(format!(
                "{at}: field `fields` must be a list of field rules, got {v}"
            ));
        }
    }
    match top.get("detectors") {
        None => {}
        Some(Value::Object(map)) => {
            for (name, setting) in map {
                let Some((index, detector)) = detectors::find(name) else {
                    return Err(format!(
                        "{at}: field `detectors`: unknown detector `{name}` (known: {})",
                        detectors::names()
                    ));
                };
                config.detectors[index] = parse_detector(detector, setting)?;
            }
        }
        Some(v) => {
            return Err(format!(
                "{at}: field `detectors` must be an object of detector name -> true, false or \
                 settings, got {v}"
            ));
        }
    }
    Ok(config)
}

fn parse_field(value: &Value, at: &str) -> Result<FieldRule, String> {
    let Value::Object(obj) = value else {
        return Err(format!("{at}: must be an object, got {value}"));
    };
    known_fields(obj, FIELD_FIELDS, at)?;
    let pointer = match obj.get("pointer") {
        None => return Err(format!("{at}: field `pointer` is required")),
        Some(Value::String(p)) if portcullis_sdk::pointer::split(p).is_some() => p.clone(),
        Some(v) => {
            return Err(format!(
                "{at}: field `pointer` must be a JSON pointer (RFC 6901: \"\" or starting with \
                 '/', `~` only as ~0 or ~1, `*` segments match everything), got {v}"
            ));
        }
    };
    let kind = match obj.get("kind") {
        None => {
            return Err(format!(
                "{at}: field `kind` is required (the finding kind, e.g. \"storage-key\")"
            ));
        }
        Some(Value::String(k)) if valid_kind(k) => k.clone(),
        Some(v) => {
            return Err(format!(
                "{at}: field `kind` must be 1-{KIND_MAX} characters of a-z, 0-9, '.', '_' and \
                 '-', got {v}"
            ));
        }
    };
    let masking = parse_masking(obj, at, DEFAULT_FIELD_LABEL)?;
    Ok(FieldRule {
        pointer,
        kind,
        masking,
    })
}

fn parse_detector(
    detector: &detectors::Detector,
    setting: &Value,
) -> Result<Option<DetectorRule>, String> {
    let at = format!("detectors.{}", detector.name);
    let high_entropy = detector.check == CheckKind::MinEntropy;
    match setting {
        Value::Bool(false) => Ok(None),
        Value::Bool(true) => Ok(Some(default_rule(detector))),
        Value::Object(obj) => {
            if obj.contains_key("min_entropy") && !high_entropy {
                return Err(format!(
                    "{at}: field `min_entropy` applies only to detector `high-entropy`"
                ));
            }
            let known = if high_entropy {
                HIGH_ENTROPY_FIELDS
            } else {
                DETECTOR_FIELDS
            };
            known_fields(obj, known, &at)?;
            let masking = parse_masking(obj, &at, detector.label)?;
            let min_entropy = match obj.get("min_entropy") {
                None => DEFAULT_MIN_ENTROPY,
                Some(v) => match v.as_f64() {
                    Some(x) if (MIN_ENTROPY_RANGE.0..=MIN_ENTROPY_RANGE.1).contains(&x) => x as f32,
                    _ => {
                        return Err(format!(
                            "{at}: field `min_entropy` must be a number in {:.1}..={:.1} (bits \
                             per character), got {v}",
                            MIN_ENTROPY_RANGE.0, MIN_ENTROPY_RANGE.1
                        ));
                    }
                },
            };
            Ok(Some(DetectorRule {
                masking,
                check: check_of(detector.check, min_entropy),
            }))
        }
        other => Err(format!(
            "{at}: must be true (on), false (off) or an object with `strategy`, `label`, \
             `keep`{}, got {other}",
            if high_entropy { ", `min_entropy`" } else { "" }
        )),
    }
}

/// `strategy` (default `redact`) with `label` (redact and hash) or `keep` (partial).
fn parse_masking(
    obj: &Map<String, Value>,
    at: &str,
    default_label: &str,
) -> Result<Masking, String> {
    let strategy = match obj.get("strategy") {
        None => "redact",
        Some(Value::String(s)) if ["redact", "partial", "hash"].contains(&s.as_str()) => s,
        Some(v) => {
            return Err(format!(
                "{at}: field `strategy` must be \"redact\", \"partial\" or \"hash\", got {v}"
            ));
        }
    };
    if strategy == "partial" {
        if obj.contains_key("label") {
            return Err(format!(
                "{at}: field `label` applies only to strategies \"redact\" and \"hash\", not \"partial\""
            ));
        }
        let keep = match obj.get("keep") {
            None => DEFAULT_KEEP,
            Some(v) => match v.as_u64() {
                Some(n) if n <= u64::from(MAX_KEEP) => n as u32,
                _ => {
                    return Err(format!(
                        "{at}: field `keep` must be an integer in 0..={MAX_KEEP} (characters \
                         kept at the end), got {v}"
                    ));
                }
            },
        };
        return Ok(Masking::Partial(keep));
    }
    if obj.contains_key("keep") {
        return Err(format!(
            "{at}: field `keep` applies only to strategy \"partial\", not \"{strategy}\""
        ));
    }
    let label = match obj.get("label") {
        None => default_label.to_string(),
        Some(Value::String(l)) if valid_label(l) => l.clone(),
        Some(v) => {
            return Err(format!(
                "{at}: field `label` must be 1-{LABEL_MAX} characters of A-Z, 0-9 and '_', got {v}"
            ));
        }
    };
    Ok(if strategy == "hash" {
        Masking::Hash(label)
    } else {
        Masking::Redact(label)
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

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= KIND_MAX
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= LABEL_MAX
        && label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}
