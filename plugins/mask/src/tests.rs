use portcullis_sdk::{MaskEdit, MaskPlan, MaskTarget, Phases, Strategy};
use regex::{Regex, RegexBuilder};
use serde_json::{Value, json};

use crate::config::{
    Check, Config, DEFAULT_BODY_LIMIT, DEFAULT_MIN_ENTROPY, DetectorRule, FieldRule,
    MAX_BODY_LIMIT, Masking, parse_config,
};
use crate::detectors::{CheckKind, DETECTORS, find};
use portcullis_sdk::BodyKind;

use crate::plan::{body_kind, build, plan_for, wants_body};
use crate::{CONFIG_SCHEMA, config_failure, descriptor};

/// The host's compiled size limit of one pattern (`host/src/plugin/contract.rs`).
const PATTERN_SIZE_MAX: usize = 1 << 20;
/// Azurite's published development account key: the shape of every storage account key.
const STORAGE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const UUID: &str = "550e8400-e29b-41d4-a716-4466554400ab";
const SHA256_HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

fn config(value: Value) -> Config {
    parse_config(&value.to_string()).unwrap()
}

fn config_err(value: Value) -> String {
    parse_config(&value.to_string()).unwrap_err()
}

/// Assert that `value` is refused with an error containing every one of `parts`.
fn refused(value: Value, parts: &[&str]) {
    let e = config_err(value.clone());
    for part in parts {
        assert!(e.contains(part), "{value}: {e:?} lacks {part:?}");
    }
}

fn rule(config: &Config, name: &str) -> Option<DetectorRule> {
    config.detectors[find(name).unwrap().0].clone()
}

fn on(names: &[&str]) -> Vec<&'static str> {
    DETECTORS
        .iter()
        .filter(|d| names.contains(&d.name))
        .map(|d| d.name)
        .collect()
}

/// The names of the enabled detectors, in table order.
fn enabled(config: &Config) -> Vec<&'static str> {
    DETECTORS
        .iter()
        .zip(&config.detectors)
        .filter(|(_, r)| r.is_some())
        .map(|(d, _)| d.name)
        .collect()
}

/// A comparable view of a mask edit.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Pointer(String),
    Regex {
        pattern: u32,
        group: u32,
        check: Check,
    },
    Other,
}

fn view(edit: &MaskEdit) -> (String, Target, Masking) {
    let target = match &edit.target {
        MaskTarget::JsonPointer(p) => Target::Pointer(p.clone()),
        MaskTarget::Regex(r) => Target::Regex {
            pattern: r.pattern,
            group: r.group,
            check: match r.check {
                portcullis_sdk::Check::None => Check::None,
                portcullis_sdk::Check::Luhn => Check::Luhn,
                portcullis_sdk::Check::Iban => Check::Iban,
                portcullis_sdk::Check::MinEntropy(bits) => Check::MinEntropy(bits),
            },
        },
        MaskTarget::ByteRange(_) => Target::Other,
    };
    let masking = match &edit.strategy {
        Strategy::Redact(l) => Masking::Redact(l.clone()),
        Strategy::Partial(n) => Masking::Partial(*n),
        Strategy::Hash(l) => Masking::Hash(l.clone()),
    };
    (edit.kind.clone(), target, masking)
}

fn views(plan: &MaskPlan) -> Vec<(String, Target, Masking)> {
    plan.edits.iter().map(view).collect()
}

/// The edit of detector `name` in `plan`.
fn detector_edit(plan: &MaskPlan, name: &str) -> Option<(Target, Masking)> {
    views(plan)
        .into_iter()
        .find(|(kind, target, _)| kind == name && matches!(target, Target::Regex { .. }))
        .map(|(_, t, m)| (t, m))
}

fn compile(pattern: &str) -> Regex {
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_MAX)
        .build()
        .unwrap_or_else(|e| panic!("{pattern:?}: {e}"))
}

/// The text the host would mask for each match of detector `name` in `text` (its group).
fn finds(name: &str, text: &str) -> Vec<String> {
    let (_, d) = find(name).unwrap();
    compile(d.pattern)
        .captures_iter(text)
        .filter_map(|c| c.get(d.group as usize))
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Each of `texts` is found whole, as one match.
fn finds_whole(name: &str, texts: &[&str]) {
    for t in texts {
        assert_eq!(finds(name, t), vec![t.to_string()], "{name} on {t:?}");
    }
}

/// Nothing in any of `texts` is found.
fn finds_nothing(name: &str, texts: &[&str]) {
    for t in texts {
        assert_eq!(finds(name, t), Vec::<String>::new(), "{name} on {t:?}");
    }
}

// ---- configuration ----

#[test]
fn an_empty_config_has_the_defaults() {
    let c = config(json!({}));
    assert_eq!(c, Config::default());
    assert_eq!(c.body_limit, DEFAULT_BODY_LIMIT);
    assert_eq!(DEFAULT_BODY_LIMIT, 4 * 1024 * 1024);
    assert!(c.fields.is_empty());
    assert_eq!(c.detectors.len(), DETECTORS.len());
    let all: Vec<&str> = DETECTORS.iter().map(|d| d.name).collect();
    let expected: Vec<&str> = all
        .iter()
        .copied()
        .filter(|n| *n != "ssn" && *n != "high-entropy")
        .collect();
    assert_eq!(enabled(&c), expected);
    assert_eq!(
        rule(&c, "email"),
        Some(DetectorRule {
            masking: Masking::Redact("EMAIL".into()),
            check: Check::None
        })
    );
    assert_eq!(rule(&c, "card").unwrap().check, Check::Luhn);
    assert_eq!(rule(&c, "iban").unwrap().check, Check::Iban);
}

#[test]
fn the_documented_config_parses() {
    let c = config(json!({
        "body_limit": 4194304,
        "fields": [
            {"pointer": "/value/*/properties/primaryKey", "kind": "storage-key", "strategy": "redact", "label": "SECRET"},
            {"pointer": "/keys/*/value", "kind": "storage-key"},
            {"pointer": "/owner/id", "kind": "user-id", "strategy": "hash", "label": "USER"},
            {"pointer": "/card", "kind": "card-field", "strategy": "partial", "keep": 4}
        ],
        "detectors": {"email": true, "phone": {"strategy": "partial", "keep": 4}, "ssn": true, "ipv6": false, "high-entropy": {"min_entropy": 4.5}}
    }));
    assert_eq!(c.body_limit, 4194304);
    assert_eq!(
        c.fields,
        vec![
            FieldRule {
                pointer: "/value/*/properties/primaryKey".into(),
                kind: "storage-key".into(),
                masking: Masking::Redact("SECRET".into()),
            },
            FieldRule {
                pointer: "/keys/*/value".into(),
                kind: "storage-key".into(),
                masking: Masking::Redact("REDACTED".into()),
            },
            FieldRule {
                pointer: "/owner/id".into(),
                kind: "user-id".into(),
                masking: Masking::Hash("USER".into()),
            },
            FieldRule {
                pointer: "/card".into(),
                kind: "card-field".into(),
                masking: Masking::Partial(4),
            },
        ]
    );
    assert_eq!(rule(&c, "phone").unwrap().masking, Masking::Partial(4));
    assert!(rule(&c, "ssn").is_some());
    assert!(rule(&c, "ipv6").is_none());
    assert_eq!(
        rule(&c, "high-entropy"),
        Some(DetectorRule {
            masking: Masking::Redact("SECRET".into()),
            check: Check::MinEntropy(4.5)
        })
    );
}

#[test]
fn the_top_level_is_checked() {
    assert!(
        parse_config("not json")
            .unwrap_err()
            .contains("not valid JSON")
    );
    assert!(
        parse_config("[]")
            .unwrap_err()
            .contains("must be a JSON object")
    );
    assert!(
        parse_config("null")
            .unwrap_err()
            .contains("must be a JSON object")
    );
    refused(
        json!({"rules": []}),
        &[
            "config",
            "unknown field `rules`",
            "body_limit, fields, detectors",
        ],
    );
    let twice = r#"{"detectors": {"ssn": false, "ssn": true}}"#;
    assert!(
        parse_config(twice)
            .unwrap_err()
            .contains("\"ssn\" appears twice")
    );
    let twice = r#"{"body_limit": 1, "body_limit": 2}"#;
    assert!(parse_config(twice).unwrap_err().contains("appears twice"));
}

#[test]
fn body_limit_is_bounded() {
    assert_eq!(config(json!({"body_limit": 1})).body_limit, 1);
    assert_eq!(
        config(json!({"body_limit": MAX_BODY_LIMIT})).body_limit,
        67108864
    );
    for bad in [
        json!(0),
        json!(MAX_BODY_LIMIT + 1),
        json!(-1),
        json!(1.5),
        json!("4MiB"),
        json!(null),
    ] {
        refused(
            json!({"body_limit": bad}),
            &["field `body_limit`", "1..=67108864"],
        );
    }
}

#[test]
fn field_rules_are_checked() {
    refused(json!({"fields": {}}), &["field `fields` must be a list"]);
    refused(json!({"fields": ["/a"]}), &["fields[0]: must be an object"]);
    refused(
        json!({"fields": [{"kind": "k"}]}),
        &["fields[0]", "`pointer` is required"],
    );
    for bad in [json!("no-slash"), json!("/bad~2"), json!("/a~"), json!(7)] {
        refused(
            json!({"fields": [{"pointer": "/ok", "kind": "k"}, {"pointer": bad, "kind": "k"}]}),
            &["fields[1]", "field `pointer`", "RFC 6901"],
        );
    }
    refused(
        json!({"fields": [{"pointer": "/a"}]}),
        &["fields[0]", "`kind` is required"],
    );
    let long = "k".repeat(65);
    for bad in [
        json!("Storage"),
        json!(""),
        json!("a b"),
        json!(long),
        json!(1),
    ] {
        refused(
            json!({"fields": [{"pointer": "/a", "kind": bad}]}),
            &["fields[0]", "field `kind`", "a-z, 0-9"],
        );
    }
    refused(
        json!({"fields": [{"pointer": "/a", "kind": "k", "lable": "X"}]}),
        &[
            "fields[0]",
            "unknown field `lable`",
            "pointer, kind, strategy, label, keep",
        ],
    );
    refused(
        json!({"fields": [{"pointer": "/a", "kind": "k", "strategy": "mask"}]}),
        &[
            "fields[0]",
            "field `strategy`",
            "\"redact\", \"partial\" or \"hash\"",
        ],
    );
    let too_many: Vec<Value> = (0..1025)
        .map(|_| json!({"pointer": "/a", "kind": "k"}))
        .collect();
    refused(json!({"fields": too_many}), &["1025 rules", "at most 1024"]);
}

#[test]
fn field_pointers_follow_rfc_6901() {
    let c = config(json!({"fields": [
        {"pointer": "", "kind": "everything"},
        {"pointer": "/a~0b~1c/*/0", "kind": "escaped"},
        {"pointer": "/", "kind": "empty-name"}
    ]}));
    let pointers: Vec<&str> = c.fields.iter().map(|f| f.pointer.as_str()).collect();
    assert_eq!(pointers, ["", "/a~0b~1c/*/0", "/"]);
    let kind = "a".repeat(64);
    let c = config(
        json!({"fields": [{"pointer": "/a", "kind": kind}, {"pointer": "/b", "kind": "x.y_z-0"}]}),
    );
    assert_eq!(c.fields[0].kind.len(), 64);
}

#[test]
fn strategies_labels_and_keep_are_checked() {
    let field = |extra: Value| {
        let mut f = json!({"pointer": "/a", "kind": "k"});
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        json!({"fields": [f]})
    };
    let masking = |extra: Value| config(field(extra)).fields[0].masking.clone();
    assert_eq!(masking(json!({})), Masking::Redact("REDACTED".into()));
    assert_eq!(
        masking(json!({"label": "SECRET_2"})),
        Masking::Redact("SECRET_2".into())
    );
    assert_eq!(
        masking(json!({"strategy": "hash"})),
        Masking::Hash("REDACTED".into())
    );
    assert_eq!(
        masking(json!({"strategy": "hash", "label": "USER"})),
        Masking::Hash("USER".into())
    );
    assert_eq!(masking(json!({"strategy": "partial"})), Masking::Partial(4));
    assert_eq!(
        masking(json!({"strategy": "partial", "keep": 0})),
        Masking::Partial(0)
    );
    assert_eq!(
        masking(json!({"strategy": "partial", "keep": 64})),
        Masking::Partial(64)
    );
    let long = "A".repeat(33);
    assert_eq!(
        masking(json!({"label": "A".repeat(32)})),
        Masking::Redact("A".repeat(32))
    );
    for bad in [
        json!("secret"),
        json!(""),
        json!(long),
        json!("A-B"),
        json!(1),
    ] {
        refused(
            field(json!({"label": bad})),
            &["fields[0]", "field `label`", "A-Z, 0-9 and '_'"],
        );
    }
    refused(
        field(json!({"strategy": "partial", "label": "X"})),
        &["fields[0]", "`label` applies only", "not \"partial\""],
    );
    for strategy in ["redact", "hash"] {
        refused(
            field(json!({"strategy": strategy, "keep": 4})),
            &[
                "fields[0]",
                "`keep` applies only to strategy \"partial\"",
                strategy,
            ],
        );
    }
    refused(
        field(json!({"keep": 4})),
        &["`keep` applies only", "not \"redact\""],
    );
    for bad in [json!(65), json!(-1), json!("4"), json!(1.5)] {
        refused(
            field(json!({"strategy": "partial", "keep": bad})),
            &["fields[0]", "field `keep`", "0..=64"],
        );
    }
}

#[test]
fn detectors_are_switched_on_and_off() {
    let c = config(json!({"detectors": {"email": false, "ssn": true, "high-entropy": true}}));
    assert!(rule(&c, "email").is_none());
    assert_eq!(
        rule(&c, "ssn"),
        Some(DetectorRule {
            masking: Masking::Redact("SSN".into()),
            check: Check::None
        })
    );
    assert_eq!(
        rule(&c, "high-entropy").unwrap().check,
        Check::MinEntropy(DEFAULT_MIN_ENTROPY)
    );
    // Not mentioned: default.
    assert!(rule(&c, "phone").is_some());
    // An object turns a detector on, even an opt-in one, even empty.
    let c = config(json!({"detectors": {"ssn": {}}}));
    assert_eq!(
        rule(&c, "ssn").unwrap().masking,
        Masking::Redact("SSN".into())
    );
    // Everything off.
    let all_off: serde_json::Map<String, Value> = DETECTORS
        .iter()
        .map(|d| (d.name.to_string(), json!(false)))
        .collect();
    let c = config(json!({"detectors": all_off}));
    assert!(enabled(&c).is_empty());
}

#[test]
fn detector_settings_map_to_strategies_and_checks() {
    let c = config(json!({"detectors": {
        "phone": {"strategy": "partial", "keep": 2},
        "email": {"strategy": "hash"},
        "card": {"label": "PAN"},
        "jwt": {"strategy": "hash", "label": "TOKEN"},
        "high-entropy": {"min_entropy": 5, "strategy": "partial"}
    }}));
    assert_eq!(rule(&c, "phone").unwrap().masking, Masking::Partial(2));
    // hash without a label keeps the detector's own label.
    assert_eq!(
        rule(&c, "email").unwrap().masking,
        Masking::Hash("EMAIL".into())
    );
    assert_eq!(
        rule(&c, "card"),
        Some(DetectorRule {
            masking: Masking::Redact("PAN".into()),
            check: Check::Luhn
        })
    );
    assert_eq!(
        rule(&c, "jwt").unwrap().masking,
        Masking::Hash("TOKEN".into())
    );
    assert_eq!(
        rule(&c, "high-entropy"),
        Some(DetectorRule {
            masking: Masking::Partial(4),
            check: Check::MinEntropy(5.0)
        })
    );
    for bits in [3.0, 6.0, 4.25] {
        let c = config(json!({"detectors": {"high-entropy": {"min_entropy": bits}}}));
        assert_eq!(
            rule(&c, "high-entropy").unwrap().check,
            Check::MinEntropy(bits as f32)
        );
    }
}

#[test]
fn detector_errors_name_the_detector() {
    refused(
        json!({"detectors": ["email"]}),
        &["field `detectors` must be an object"],
    );
    refused(
        json!({"detectors": {"credit-card": true}}),
        &[
            "unknown detector `credit-card`",
            "known: private-key, jwt,",
            "high-entropy",
        ],
    );
    for bad in [json!("yes"), json!(1), json!(null), json!([])] {
        refused(
            json!({"detectors": {"phone": bad}}),
            &["detectors.phone", "true (on), false (off) or an object"],
        );
    }
    refused(
        json!({"detectors": {"phone": {"enabled": true}}}),
        &[
            "detectors.phone",
            "unknown field `enabled`",
            "strategy, label, keep",
        ],
    );
    refused(
        json!({"detectors": {"email": {"min_entropy": 4.5}}}),
        &[
            "detectors.email",
            "`min_entropy` applies only to detector `high-entropy`",
        ],
    );
    for bad in [json!(2.9), json!(6.1), json!("4.5"), json!(null)] {
        refused(
            json!({"detectors": {"high-entropy": {"min_entropy": bad}}}),
            &["detectors.high-entropy", "field `min_entropy`", "3.0..=6.0"],
        );
    }
    refused(
        json!({"detectors": {"phone": {"strategy": "partial", "label": "X"}}}),
        &["detectors.phone", "`label` applies only"],
    );
    refused(
        json!({"detectors": {"email": {"keep": 3}}}),
        &["detectors.email", "`keep` applies only"],
    );
    refused(
        json!({"detectors": {"email": {"label": "email"}}}),
        &["detectors.email", "field `label`"],
    );
    refused(
        json!({"detectors": {"email": {"strategy": "drop"}}}),
        &["detectors.email", "field `strategy`"],
    );
}

// ---- plans ----

#[test]
fn body_kinds_follow_the_host() {
    for (ct, kind) in [
        ("application/json", Some(BodyKind::Json)),
        ("Application/JSON; charset=utf-8", Some(BodyKind::Json)),
        ("application/problem+json", Some(BodyKind::Json)),
        ("application/vnd.api+JSON ; x=y", Some(BodyKind::Json)),
        ("text/plain", Some(BodyKind::Text)),
        ("TEXT/HTML; charset=iso-8859-1", Some(BodyKind::Text)),
        ("text/csv", Some(BodyKind::Text)),
        ("application/xml", Some(BodyKind::Text)),
        ("application/atom+xml", Some(BodyKind::Text)),
        ("application/x-www-form-urlencoded", Some(BodyKind::Text)),
        ("application/octet-stream", None),
        ("image/png", None),
        ("multipart/form-data; boundary=x", None),
        ("application/json-seq", None),
        ("application/jsonx", None),
        ("*/*", None),
        ("application/*", None),
        ("json", None),
        ("", None),
    ] {
        assert_eq!(body_kind(Some(ct)), kind, "{ct}");
    }
    assert_eq!(body_kind(None), None);
}

#[test]
fn the_header_phase_asks_for_bodies_it_can_mask() {
    let c = config(json!({"body_limit": 1000}));
    assert_eq!(wants_body(&c, Some("application/json")), Some(1000));
    assert_eq!(
        wants_body(&c, Some("text/plain; charset=utf-8")),
        Some(1000)
    );
    assert_eq!(wants_body(&c, Some("application/octet-stream")), None);
    assert_eq!(wants_body(&c, None), None);
    let default = config(json!({}));
    assert_eq!(
        wants_body(&default, Some("application/json")),
        Some(DEFAULT_BODY_LIMIT)
    );

    // Fields only: JSON bodies only.
    let all_off: serde_json::Map<String, Value> = DETECTORS
        .iter()
        .map(|d| (d.name.to_string(), json!(false)))
        .collect();
    let fields_only = config(json!({
        "fields": [{"pointer": "/k", "kind": "k"}],
        "detectors": all_off.clone()
    }));
    assert_eq!(
        wants_body(&fields_only, Some("application/json")),
        Some(DEFAULT_BODY_LIMIT)
    );
    assert_eq!(wants_body(&fields_only, Some("text/plain")), None);
    assert!(plan_for(&fields_only, Some("text/plain")).is_none());

    // Nothing to mask: pass everything.
    let nothing = config(json!({"detectors": all_off}));
    assert_eq!(wants_body(&nothing, Some("application/json")), None);
    assert!(plan_for(&nothing, Some("application/json")).is_none());
    assert!(plan_for(&nothing, Some("text/plain")).is_none());
}

#[test]
fn the_default_plan_has_the_default_detectors_in_table_order() {
    let c = config(json!({}));
    for kind in [BodyKind::Json, BodyKind::Text] {
        let plan = build(&c, kind);
        assert!(plan.findings.is_empty());
        let expected: Vec<(String, Target, Masking)> = DETECTORS
            .iter()
            .enumerate()
            .filter(|(_, d)| d.default_on)
            .map(|(i, d)| {
                (
                    d.name.to_string(),
                    Target::Regex {
                        pattern: i as u32,
                        group: d.group,
                        check: match d.check {
                            CheckKind::None => Check::None,
                            CheckKind::Luhn => Check::Luhn,
                            CheckKind::Iban => Check::Iban,
                            CheckKind::MinEntropy => Check::MinEntropy(DEFAULT_MIN_ENTROPY),
                        },
                    },
                    Masking::Redact(d.label.to_string()),
                )
            })
            .collect();
        assert_eq!(views(&plan), expected, "{kind:?}");
        assert!(detector_edit(&plan, "ssn").is_none());
        assert!(detector_edit(&plan, "high-entropy").is_none());
    }
}

#[test]
fn json_plans_have_the_fields_first_and_text_plans_none() {
    let c = config(json!({
        "fields": [
            {"pointer": "/keys/*/value", "kind": "storage-key"},
            {"pointer": "/owner/id", "kind": "user-id", "strategy": "hash", "label": "USER"},
            {"pointer": "/card", "kind": "card-field", "strategy": "partial", "keep": 4}
        ],
        "detectors": {"ssn": true}
    }));
    let json_plan = build(&c, BodyKind::Json);
    let v = views(&json_plan);
    assert_eq!(
        v[..3],
        [
            (
                "storage-key".to_string(),
                Target::Pointer("/keys/*/value".into()),
                Masking::Redact("REDACTED".into())
            ),
            (
                "user-id".to_string(),
                Target::Pointer("/owner/id".into()),
                Masking::Hash("USER".into())
            ),
            (
                "card-field".to_string(),
                Target::Pointer("/card".into()),
                Masking::Partial(4)
            ),
        ]
    );
    let detectors_in_json: Vec<_> = v[3..].to_vec();
    let text_plan = build(&c, BodyKind::Text);
    assert_eq!(views(&text_plan), detectors_in_json);
    assert!(
        views(&text_plan)
            .iter()
            .all(|(_, t, _)| matches!(t, Target::Regex { .. }))
    );
    assert!(detector_edit(&text_plan, "ssn").is_some());
    // plan_for picks the kind from the Content-Type.
    let p = plan_for(&c, Some("application/problem+json; charset=utf-8")).unwrap();
    assert_eq!(views(&p), v);
    let p = plan_for(&c, Some("text/html")).unwrap();
    assert_eq!(views(&p), detectors_in_json);
    assert!(plan_for(&c, Some("image/png")).is_none());
}

#[test]
fn plan_edits_carry_the_configured_strategies_checks_and_groups() {
    let c = config(json!({"detectors": {
        "phone": {"strategy": "partial", "keep": 4},
        "email": {"strategy": "hash", "label": "MAIL"},
        "ipv6": false,
        "high-entropy": {"min_entropy": 4.5},
        "ssn": true
    }}));
    let plan = build(&c, BodyKind::Text);
    let index = |name: &str| find(name).unwrap().0 as u32;
    assert_eq!(
        detector_edit(&plan, "phone"),
        Some((
            Target::Regex {
                pattern: index("phone"),
                group: 0,
                check: Check::None
            },
            Masking::Partial(4)
        ))
    );
    assert_eq!(
        detector_edit(&plan, "email").unwrap().1,
        Masking::Hash("MAIL".into())
    );
    assert!(detector_edit(&plan, "ipv6").is_none());
    assert_eq!(
        detector_edit(&plan, "high-entropy"),
        Some((
            Target::Regex {
                pattern: index("high-entropy"),
                group: 0,
                check: Check::MinEntropy(4.5)
            },
            Masking::Redact("SECRET".into())
        ))
    );
    assert_eq!(
        detector_edit(&plan, "card").unwrap().0,
        Target::Regex {
            pattern: index("card"),
            group: 0,
            check: Check::Luhn
        }
    );
    assert_eq!(
        detector_edit(&plan, "iban").unwrap().0,
        Target::Regex {
            pattern: index("iban"),
            group: 0,
            check: Check::Iban
        }
    );
    for name in [
        "azure-storage-key",
        "azure-connection-string",
        "sas-signature",
        "bearer-token",
    ] {
        assert_eq!(
            detector_edit(&plan, name).unwrap().0,
            Target::Regex {
                pattern: index(name),
                group: 1,
                check: Check::None
            },
            "{name}"
        );
    }
    // Every edit's kind is its detector's name and its group the table's.
    for (kind, target, _) in views(&plan) {
        let Target::Regex { pattern, group, .. } = target else {
            panic!("{kind}: not a regex edit");
        };
        let d = &DETECTORS[pattern as usize];
        assert_eq!(d.name, kind);
        assert_eq!(d.group, group, "{kind}");
    }
}

// ---- descriptor, schema, failure ----

#[test]
fn the_descriptor_declares_the_response_phases_and_the_table_patterns() {
    let d = descriptor();
    assert_eq!(d.name, "mask");
    assert_eq!(d.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(d.phases, Phases::RESPONSE_HEADERS | Phases::RESPONSE_BODY);
    assert_eq!(d.response_body_limit, 67108864);
    assert_eq!(d.response_content_types, ["*/*"]);
    assert_eq!(d.request_body_limit, 0);
    assert!(d.request_content_types.is_empty());
    let table: Vec<&str> = DETECTORS.iter().map(|d| d.pattern).collect();
    assert_eq!(d.patterns, table);
    assert_eq!(d.config_schema.as_deref(), Some(CONFIG_SCHEMA));
}

#[test]
fn the_schema_is_json_and_lists_every_detector_with_its_default() {
    let schema: Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
    let props = &schema["properties"];
    assert_eq!(props["body_limit"]["default"], json!(DEFAULT_BODY_LIMIT));
    assert_eq!(props["body_limit"]["maximum"], json!(MAX_BODY_LIMIT));
    let detectors = props["detectors"]["properties"].as_object().unwrap();
    let names: Vec<&str> = detectors.keys().map(String::as_str).collect();
    let table: Vec<&str> = DETECTORS.iter().map(|d| d.name).collect();
    assert_eq!(names, table);
    for d in DETECTORS {
        assert_eq!(
            detectors[d.name]["default"],
            json!(d.default_on),
            "{}",
            d.name
        );
    }
    assert_eq!(
        detectors["high-entropy"]["oneOf"][1]["properties"]["min_entropy"]["default"],
        json!(4.3)
    );
}

#[test]
fn a_config_failure_replaces_the_response_with_a_500() {
    let r = config_failure("fields[0]: field `kind` is required");
    assert_eq!(r.status, 500);
    assert!(
        r.headers
            .iter()
            .any(|(n, v)| n == "content-type" && v == "application/json")
    );
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "mask-config");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("fields[0]: field `kind` is required"),
        "{message}"
    );
    // A long error is cut (on a character boundary).
    let r = config_failure(&"é".repeat(2000));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(body["error"]["message"].as_str().unwrap().len() <= 512);
}

// ---- the detector table and its patterns ----

#[test]
fn the_table_is_sound_and_every_pattern_compiles_with_its_group() {
    let mut names = std::collections::HashSet::new();
    for (i, d) in DETECTORS.iter().enumerate() {
        assert!(names.insert(d.name), "{} twice", d.name);
        assert_eq!(find(d.name).unwrap().0, i);
        // The name is a valid finding kind and the label a valid label.
        assert!(
            config(json!({"fields": [{"pointer": "/a", "kind": d.name, "label": d.label}]}))
                .fields
                .len()
                == 1
        );
        let re = compile(d.pattern);
        assert!(
            (d.group as usize) < re.captures_len(),
            "{}: group {} of {}",
            d.name,
            d.group,
            re.captures_len()
        );
        // No pattern matches the empty string (the host would find nothing to mask anyway,
        // but it would mean a pattern that is mostly optional).
        assert!(!re.is_match(""), "{}", d.name);
    }
    let off: Vec<&str> = DETECTORS
        .iter()
        .filter(|d| !d.default_on)
        .map(|d| d.name)
        .collect();
    assert_eq!(off, on(&["ssn", "high-entropy"]));
}

#[test]
fn email_finds_addresses() {
    finds_whole(
        "email",
        &[
            "alice@example.com",
            "bob.smith+tag@mail.example.co.uk",
            "first_last-1@sub-domain.example.io",
        ],
    );
    assert_eq!(
        finds("email", "Contact <carol@example.com>, dave@example.net."),
        ["carol@example.com", "dave@example.net"]
    );
    finds_nothing(
        "email",
        &[
            "user@localhost",
            "@mention",
            "a@b",
            "name@123.45",
            "2026-11-28T23:14:43Z",
            UUID,
        ],
    );
}

#[test]
fn phone_finds_international_and_nanp_numbers_only() {
    finds_whole(
        "phone",
        &[
            "(415) 555-0132",
            "(415)555-0132",
            "415-555-0132",
            "415.555.0132",
            "+1 415 555 0132",
            "+44 20 7946 0958",
            "+14155550132",
            "+1 (415) 555-0132",
            "+44 (0)20 7946 0958",
            "+49-30-901820",
            "+33 1 23 45 67 89",
        ],
    );
    assert_eq!(
        finds("phone", "call 415-555-0132 or +44 20 7946 0958."),
        ["415-555-0132", "+44 20 7946 0958"]
    );
    assert_eq!(finds("phone", r#""tel":"+14155550132""#), ["+14155550132"]);
    finds_nothing(
        "phone",
        &[
            "2026-11-28T23:14:43Z",
            "2026-11-28T23:14:43.123+01:00",
            "2026-11-28T23:14:43+1000",
            "2026-11-28",
            "28.11.2026",
            "23:14:43",
            UUID,
            "123e4567-e89b-12d3-a456-426614174000",
            "1.2.3",
            "10.15.7",
            "v2.3.4-rc.1",
            "1.0.0+20260101",
            "4155550132",
            "14155550132",
            "123456789012345",
            "192.168.100.200",
            "10.0.0.1",
            "123-456-7890",
            "555-0132",
            "123-45-6789",
            "4111-1111-1111-1111",
            "+05:30",
            "+1 2024",
            "x+14155550132",
        ],
    );
}

#[test]
fn card_finds_digit_runs_with_single_separators() {
    finds_whole(
        "card",
        &[
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "378282246310005",
            "3782 822463 10005",
            "5555 5555 5555 4444",
            "6011000990139424",
            "4222222222222",
            "2223003122003222",
        ],
    );
    assert_eq!(
        finds("card", "card: 4111 1111 1111 1111, exp 12/29"),
        ["4111 1111 1111 1111"]
    );
    finds_nothing(
        "card",
        &[
            "41111111111",
            "41111111111111111111",
            "1764371683000",
            "9111111111111111",
            "4111  1111 1111 1111",
            "4111--1111-1111-1111",
            "x4111111111111111",
            "4111111111111111x",
            "2026-11-28",
            UUID,
            "+1 415 555 0132",
        ],
    );
}

#[test]
fn iban_finds_compact_and_grouped_ibans() {
    finds_whole(
        "iban",
        &[
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            "FR1420041010050500013M02606",
            "NO9386011117947",
        ],
    );
    assert_eq!(
        finds("iban", "IBAN: DE89 3704 0044 0532 0130 00, BIC COBADEFFXXX"),
        ["DE89 3704 0044 0532 0130 00"]
    );
    finds_nothing(
        "iban",
        &[
            "DE89",
            "DE89370400440",
            "de89370400440532013000",
            "XDE89370400440532013000",
            "DE89370400440532013000x",
            UUID,
            SHA256_HEX,
        ],
    );
}

#[test]
fn ssn_finds_the_dashed_form_only() {
    finds_whole("ssn", &["123-45-6789", "078-05-1120"]);
    assert_eq!(finds("ssn", "SSN: 078-05-1120."), ["078-05-1120"]);
    finds_nothing(
        "ssn",
        &[
            "123456789",
            "123-456-789",
            "123-45-67890",
            "1123-45-6789",
            "2026-11-28",
            "415-555-0132",
            UUID,
        ],
    );
}

#[test]
fn ipv4_finds_dotted_quads_with_valid_octets() {
    finds_whole(
        "ipv4",
        &["10.0.0.1", "192.168.100.200", "255.255.255.255", "0.0.0.0"],
    );
    assert_eq!(finds("ipv4", "from 8.8.8.8:53"), ["8.8.8.8"]);
    finds_nothing(
        "ipv4",
        &[
            "256.1.1.1",
            "1.2.3",
            "999.1.1.1",
            "10.0.0",
            "01.02.03.04x",
            "2026-11-28T23:14:43Z",
            "415.555.0132",
        ],
    );
}

#[test]
fn ipv6_finds_full_and_compressed_addresses() {
    finds_whole(
        "ipv6",
        &[
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "2001:db8::8a2e:370:7334",
            "fe80::1ff:fe23:4567:890a",
            "FE80::1",
            "2001:db8::",
        ],
    );
    assert_eq!(finds("ipv6", "[2001:db8::1]:443"), ["2001:db8::1"]);
    finds_nothing(
        "ipv6",
        &[
            "23:14:43",
            "2026-11-28T23:14:43Z",
            "00:1A:2B:3C:4D:5E",
            "01:23:45:67:89:ab",
            "::",
            // The loopback and other addresses with no group before `::` are not matched.
            "::1",
            "std::vector",
            "1:2:3:4:5:6:7",
            UUID,
        ],
    );
}

#[test]
fn jwt_finds_three_segment_tokens() {
    finds_whole("jwt", &[JWT, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."]);
    assert_eq!(finds("jwt", &format!("token={JWT}&x=1")), [JWT]);
    finds_nothing(
        "jwt",
        &[
            "abc.def.ghi",
            "www.example.com",
            "foo.eyJhbGci.bar",
            "eyJhbGci.abc.def",
            "eyJhbGciOiJIUzI1NiJ9",
            "a1b2c3.d4e5f6.g7h8i9",
        ],
    );
}

#[test]
fn azure_storage_key_finds_88_character_keys_only() {
    assert_eq!(STORAGE_KEY.len(), 88);
    for text in [
        STORAGE_KEY.to_string(),
        format!("\"{STORAGE_KEY}\""),
        format!("key1: {STORAGE_KEY}\n"),
        format!("AccountKey={STORAGE_KEY};"),
    ] {
        assert_eq!(finds("azure-storage-key", &text), [STORAGE_KEY], "{text}");
    }
    let long_run = format!("{}{}", &STORAGE_KEY[..86], &STORAGE_KEY[..32]);
    assert_eq!(long_run.len(), 118);
    finds_nothing(
        "azure-storage-key",
        &[
            UUID,
            SHA256_HEX,
            // A 120-character base64 run ending in `==`: not a key.
            &format!("{long_run}=="),
            // Inside a longer run.
            &format!("x{STORAGE_KEY}"),
            &format!("/{STORAGE_KEY}"),
            // One pad short.
            &STORAGE_KEY[..87],
            &STORAGE_KEY[1..],
        ],
    );
}

#[test]
fn azure_connection_string_finds_the_secret_values() {
    let storage = format!(
        "DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey={STORAGE_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    );
    assert_eq!(finds("azure-connection-string", &storage), [STORAGE_KEY]);
    let bus = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=abc123+/xyz=";
    assert_eq!(finds("azure-connection-string", bus), ["abc123+/xyz="]);
    let sas = "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2021-08-06&ss=b&sig=abc%2Bdef%3D";
    assert_eq!(
        finds("azure-connection-string", sas),
        ["sv=2021-08-06&ss=b&sig=abc%2Bdef%3D"]
    );
    assert_eq!(
        finds("azure-connection-string", r#"{"cs":"accountkey=secret"}"#),
        ["secret"]
    );
    assert_eq!(
        finds("azure-connection-string", "<cs>ACCOUNTKEY=secret</cs>"),
        ["secret"]
    );
    finds_nothing(
        "azure-connection-string",
        &[
            "SharedAccessKeyName=RootManageSharedAccessKey",
            "AccountName=devstoreaccount1",
            "AccountKey:abc",
            "AccountKey=",
            UUID,
        ],
    );
}

#[test]
fn sas_signature_finds_the_sig_parameter() {
    let url = "https://acct.blob.core.windows.net/c/b?sv=2021-08-06&se=2026-01-01&sr=b&sp=r&sig=abc%2Bdef%3D";
    assert_eq!(finds("sas-signature", url), ["abc%2Bdef%3D"]);
    assert_eq!(finds("sas-signature", "?sig=XYZ&sv=1"), ["XYZ"]);
    assert_eq!(finds("sas-signature", "/b?sv=1&SIG=Abc"), ["Abc"]);
    assert_eq!(
        finds(
            "sas-signature",
            "<Url>https://a/b?sv=1&amp;sig=abc&amp;se=2</Url>"
        ),
        ["abc"]
    );
    assert_eq!(finds("sas-signature", r#"{"url":"/x?sig=q1w2"}"#), ["q1w2"]);
    finds_nothing(
        "sas-signature",
        &[
            "?signature=abc",
            "&sigma=1",
            "config=x",
            "xsig=abc",
            "sig=abc",
            "&sig=",
            "&sig=&x=1",
        ],
    );
}

#[test]
fn aws_access_key_finds_key_ids() {
    finds_whole(
        "aws-access-key",
        &[
            "AKIAIOSFODNN7EXAMPLE",
            "ASIAY34FZKBOKMUTVV7A",
            "ABIA0123456789ABCDEF",
            "ACCA0123456789ABCDEF",
        ],
    );
    assert_eq!(
        finds("aws-access-key", "aws_access_key_id=AKIAIOSFODNN7EXAMPLE;"),
        ["AKIAIOSFODNN7EXAMPLE"]
    );
    finds_nothing(
        "aws-access-key",
        &[
            "AKIAIOSFODNN7EXAMPL",
            "AKIAIOSFODNN7EXAMPLEX",
            "XAKIAIOSFODNN7EXAMPLE",
            "akiaiosfodnn7example",
            "AIDAIOSFODNN7EXAMPLE",
            "AKIAIOSFODNN7exampLE",
        ],
    );
}

#[test]
fn private_key_finds_whole_pem_blocks() {
    let pkcs8 = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7+/=\n-----END PRIVATE KEY-----";
    let rsa =
        "-----BEGIN RSA PRIVATE KEY-----\r\nMIIEpAIBAAKCAQEA\r\n-----END RSA PRIVATE KEY-----";
    let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,5E2D5A0B\n\nabcd+/==\n-----END RSA PRIVATE KEY-----";
    let openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----";
    let ec = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----";
    let escaped =
        r"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w0B\n-----END PRIVATE KEY-----";
    finds_whole(
        "private-key",
        &[pkcs8, rsa, encrypted, openssh, ec, escaped],
    );
    let two = format!("key1: {pkcs8}\nkey2: {ec}\n");
    assert_eq!(finds("private-key", &two), [pkcs8, ec]);
    assert_eq!(
        finds("private-key", &format!(r#"{{"pem":"{escaped}","x":1}}"#)),
        [escaped]
    );
    finds_nothing(
        "private-key",
        &[
            "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----",
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n",
            // Something that is not base64 between the markers: not one block.
            "-----BEGIN PRIVATE KEY-----\n\"},{\"x\":\"\n-----END PRIVATE KEY-----",
        ],
    );
}

#[test]
fn bearer_token_finds_the_token_after_bearer() {
    assert_eq!(
        finds("bearer-token", "Authorization: Bearer abcdefghijklmnop0123"),
        ["abcdefghijklmnop0123"]
    );
    assert_eq!(finds("bearer-token", &format!("bearer {JWT}")), [JWT]);
    assert_eq!(
        finds("bearer-token", "BEARER abc.def-ghi_jkl~mno+pq/rs=="),
        ["abc.def-ghi_jkl~mno+pq/rs=="]
    );
    assert_eq!(
        finds("bearer-token", "auth: Bearer\tabcdefghijklmnop\n"),
        ["abcdefghijklmnop"]
    );
    finds_nothing(
        "bearer-token",
        &[
            "the bearer of this letter",
            "Bearer short",
            "Bearer",
            "Bearer ",
            "nonbearer abcdefghijklmnopqrstuv",
            "Bearer: abcdefghijklmnopqrstuv",
        ],
    );
}

#[test]
fn high_entropy_finds_long_runs_but_never_across_a_uuid() {
    finds_whole(
        "high-entropy",
        &[
            "Zx9Qm2Lk8Rt4Vb7Np3Ws6Yh1Jd5Fg0Ca",
            "ghp_R2d2C3poX7wQ9mZ4kL8vB1nT6yH0sJ5fA3eU",
            "dGhpcyBpcyBhIHNlY3JldCB2YWx1ZSBmb3IgdGVzdA==",
            STORAGE_KEY,
        ],
    );
    // A hex digest is a candidate; the host's entropy check (hex: at most 4 bits per
    // character) leaves it alone.
    finds_whole("high-entropy", &[SHA256_HEX]);
    finds_nothing(
        "high-entropy",
        &[
            UUID,
            "123e4567-e89b-12d3-a456-426614174000",
            "Zx9Qm2Lk8Rt4Vb7Np3Ws6Yh1Jd5Fg0C",
            "short",
            "a-b-c-d-e-f-g-h-i-j-k-l-m-n-o-p-q-r-s-t",
        ],
    );
}

#[test]
fn patterns_stay_linear_on_hostile_bodies() {
    // Each of these would make a backtracking engine or a careless pattern slow; the host's
    // engine is linear per search, and the patterns must not make the number of searches
    // quadratic. 256 KiB each, every pattern.
    let size = 256 * 1024;
    let hostile = [
        "a".repeat(size),
        "1".repeat(size),
        "1-".repeat(size / 2),
        "A".repeat(size),
        "ab@".repeat(size / 3),
        "eyJ.".repeat(size / 4),
        "-----BEGIN PRIVATE KEY-----\n".repeat(size / 28),
        "Bearer ".repeat(size / 7),
        "::a".repeat(size / 3),
        "1.".repeat(size / 2),
        "+1 ".repeat(size / 3),
        "&sig=".repeat(size / 5),
    ];
    let started = std::time::Instant::now();
    for d in DETECTORS {
        let re = compile(d.pattern);
        for body in &hostile {
            let _ = re.captures_iter(body).count();
        }
    }
    // Generous (debug build, shared machine): a quadratic case would take minutes.
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
}

#[test]
fn only_the_storage_key_pattern_depends_on_where_a_string_starts() {
    // The host pre-searches a JSON body once per pattern and searches a string value on its own
    // only where that found something, unless the pattern has an anchor (or a `#`, possibly a
    // comment): keep anchors to the one pattern that needs one.
    for d in DETECTORS {
        let outside_classes = d.pattern.replace("[^", "[");
        let anchored = outside_classes.contains(['^', '$']) || d.pattern.contains(r"\A");
        assert!(!d.pattern.contains('#'), "{}", d.name);
        assert_eq!(anchored, d.name == "azure-storage-key", "{}", d.name);
    }
}

#[test]
fn the_shipped_example_is_a_valid_config() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/rules/mask.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    let plugins = file["plugin"].as_array().unwrap();
    assert_eq!(plugins.len(), 1);
    let plugin = plugins[0].as_table().unwrap();
    assert_eq!(plugin["name"].as_str(), Some("mask"));
    assert_eq!(plugin["alias"].as_str(), Some("mask-agents"));
    assert_eq!(plugin["file"].as_str(), Some("mask.wasm"));
    assert_eq!(plugin["instance"].as_str(), Some("reuse"));
    // The gateway hands the plugin its TOML table as JSON, like this.
    let json = serde_json::to_string(&plugin["config"]).unwrap();
    let c = parse_config(&json).unwrap();
    assert_eq!(c.body_limit, DEFAULT_BODY_LIMIT);
    let pointers: Vec<&str> = c.fields.iter().map(|f| f.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/keys/*/value",
            "/value/*/properties/primaryKey",
            "/value/*/properties/secondaryKey",
            "/primaryKey",
            "/secondaryKey",
            "/primaryConnectionString",
            "/secondaryConnectionString",
        ]
    );
    // Detectors at their defaults.
    assert_eq!(c.detectors, Config::default().detectors);
    let plan = build(&c, BodyKind::Json);
    assert_eq!(plan.edits.len(), 7 + 13);
}
