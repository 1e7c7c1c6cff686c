//! What the host checks that a guest keeps to: the file is a component, it exports this
//! contract version, its descriptor is sound, and every verdict is well formed and bounded.
use regex::{Regex, RegexBuilder};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::PluginError;
use super::bindings::types::{
    Check, Descriptor, HeaderEdit, MaskPlan, MaskTarget, Phases, RequestVerdict, ResponseVerdict,
    Strategy,
};

/// The contract this host speaks.
pub const CONTRACT: &str = "portcullis:policy@0.2.0";
/// The export every plugin must have.
pub const PLUGIN_EXPORT: &str = "portcullis:policy/plugin@0.2.0";

/// Longest deny reason, approval summary cut, and code.
pub const REASON_MAX: usize = 1024;
pub const CODE_MAX: usize = 128;
pub const SUMMARY_MAX: usize = 4096;
/// Largest deny body and replacement body.
pub const DENY_BODY_MAX: usize = 64 << 10;
pub const REPLACEMENT_BODY_MAX: usize = 1 << 20;
/// Most header edits, mask edits, findings and patterns.
pub const HEADER_EDITS_MAX: usize = 64;
pub const MASK_EDITS_MAX: usize = 4096;
pub const FINDINGS_MAX: usize = 1024;
pub const PATTERNS_MAX: usize = 256;
/// Compiled size limit of one host pattern.
pub const PATTERN_SIZE_MAX: usize = 1 << 20;

/// Headers a plugin may not edit: the gateway owns framing, routing and credentials.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// A plugin file must be a binary WebAssembly component.
pub fn check_is_component(file: &str, bytes: &[u8]) -> Result<(), PluginError> {
    let invalid = |reason: &str| PluginError::Invalid {
        file: file.to_string(),
        reason: reason.to_string(),
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(invalid("not a WebAssembly file (no `\\0asm` header)"));
    }
    // Bytes 6..8 are the layer: 0 for a core module, 1 for a component.
    if bytes[6..8] == [0, 0] {
        return Err(invalid(
            "a core WebAssembly module, not a component: wrap it with \
             `portcullis-componentize` (what scripts/build-plugins.sh does) or \
             `wasm-tools component new`, or build for wasm32-wasip2",
        ));
    }
    Ok(())
}

/// The component must export exactly this contract's plugin interface.
pub fn check_exports(
    engine: &Engine,
    file: &str,
    component: &Component,
) -> Result<(), PluginError> {
    let ty = component.component_type();
    let names: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if names.iter().any(|n| n == PLUGIN_EXPORT) {
        return Ok(());
    }
    if let Some(other) = names
        .iter()
        .find(|n| n.starts_with("portcullis:policy/plugin@"))
    {
        let found = other.trim_start_matches("portcullis:policy/plugin@");
        return Err(PluginError::ContractVersion {
            file: file.to_string(),
            found: format!("portcullis:policy@{found}"),
        });
    }
    Err(PluginError::Contract {
        file: file.to_string(),
        reason: if names.is_empty() {
            format!("exports nothing; a plugin exports `{PLUGIN_EXPORT}`")
        } else {
            format!("exports {names:?} but not `{PLUGIN_EXPORT}`")
        },
    })
}

/// Check a descriptor and compile its patterns. Every problem is listed in the error.
pub fn check_descriptor(d: &Descriptor) -> Result<Vec<Regex>, String> {
    let mut problems = Vec::new();
    let name_ok = !d.name.is_empty()
        && d.name.len() <= 64
        && d.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !d.name.starts_with('-');
    if !name_ok {
        problems.push(format!(
            "name {:?} must be 1-64 characters of a-z, 0-9 and '-'",
            d.name
        ));
    }
    if !is_version(&d.version) {
        problems.push(format!(
            "version {:?} is not a semantic version (major.minor.patch)",
            d.version
        ));
    }
    if d.phases == Phases::empty() {
        problems.push("declares no phases".to_string());
    }
    for (phase, header_phase, limit, types, what) in [
        (
            Phases::REQUEST_BODY,
            Phases::REQUEST_HEADERS,
            d.request_body_limit,
            &d.request_content_types,
            "request",
        ),
        (
            Phases::RESPONSE_BODY,
            Phases::RESPONSE_HEADERS,
            d.response_body_limit,
            &d.response_content_types,
            "response",
        ),
    ] {
        if d.phases.contains(phase) {
            if limit == 0 {
                problems.push(format!(
                    "declares the {what}-body phase with a body limit of 0"
                ));
            }
            if !d.phases.contains(header_phase) {
                problems.push(format!(
                    "declares the {what}-body phase without the {what}-headers phase that asks for it"
                ));
            }
            if types.is_empty() {
                problems.push(format!(
                    "declares the {what}-body phase but no {what} content types"
                ));
            }
        }
        for ct in types {
            if !is_media_range(ct) {
                problems.push(format!(
                    "{what} content type {ct:?} is not `type/subtype` (`*` allowed)"
                ));
            }
        }
    }
    if let Some(schema) = &d.config_schema
        && serde_json::from_str::<serde_json::Value>(schema).is_err()
    {
        problems.push("config schema is not valid JSON".to_string());
    }
    if d.patterns.len() > PATTERNS_MAX {
        problems.push(format!(
            "declares {} patterns (at most {PATTERNS_MAX})",
            d.patterns.len()
        ));
    }
    let mut patterns = Vec::new();
    for (i, p) in d.patterns.iter().enumerate() {
        match RegexBuilder::new(p).size_limit(PATTERN_SIZE_MAX).build() {
            Ok(r) => patterns.push(r),
            Err(e) => problems.push(format!("pattern {i} {p:?} does not compile: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(patterns)
    } else {
        Err(problems.join("; "))
    }
}

fn is_version(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    v.len() <= 64
        && parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_media_range(ct: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+*".contains(&b))
    };
    matches!(ct.split_once('/'), Some((t, s)) if token(t) && token(s))
}

/// Whether a body of `content_type` is offered to a plugin that declared `ranges`.
/// Parameters (`; charset=utf-8`) are ignored; `*/*` also accepts a body with no type.
pub fn offers(ranges: &[String], content_type: Option<&str>) -> bool {
    let essence = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    ranges.iter().any(|range| {
        let range = range.to_ascii_lowercase();
        match (&essence, range.split_once('/')) {
            (_, Some(("*", "*"))) => true,
            (Some(ct), Some((t, "*"))) => ct.split_once('/').is_some_and(|(ct_t, _)| ct_t == t),
            (Some(ct), _) => *ct == range,
            (None, _) => false,
        }
    })
}

/// Which hook produced a verdict: some verdicts are valid only in some hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The headers-only hook of a phase.
    Headers,
    /// The body hook of a phase.
    Body,
}

/// Check a request-phase verdict against the contract and the plugin's descriptor.
pub fn check_request_verdict(
    v: &RequestVerdict,
    d: &Descriptor,
    stage: Stage,
) -> Result<(), String> {
    match v {
        RequestVerdict::Allow => Ok(()),
        RequestVerdict::NeedBody(n) => {
            if stage == Stage::Body {
                return Err("need-body from on-request-body".to_string());
            }
            if !d.phases.contains(Phases::REQUEST_BODY) {
                return Err("need-body without declaring the request-body phase".to_string());
            }
            if *n == 0 || *n > d.request_body_limit {
                return Err(format!(
                    "need-body({n}) outside 1..={} (its declared request-body-limit)",
                    d.request_body_limit
                ));
            }
            Ok(())
        }
        RequestVerdict::Deny(deny) => {
            if !(400..=599).contains(&deny.status) {
                return Err(format!("deny status {} is not in 400..=599", deny.status));
            }
            bounded("deny code", &deny.code, CODE_MAX)?;
            bounded("deny reason", &deny.reason, REASON_MAX)?;
            if let Some(body) = &deny.body
                && body.len() > DENY_BODY_MAX
            {
                return Err(format!(
                    "deny body of {} bytes (at most {DENY_BODY_MAX})",
                    body.len()
                ));
            }
            Ok(())
        }
        RequestVerdict::RequireApproval(a) => {
            bounded("approval summary", &a.summary, SUMMARY_MAX)?;
            if a.approver_groups.is_empty() || a.approver_groups.iter().any(|g| g.is_empty()) {
                return Err("require-approval needs at least one non-empty approver group".into());
            }
            Ok(())
        }
        RequestVerdict::Modify(edits) => {
            if edits.len() > HEADER_EDITS_MAX {
                return Err(format!(
                    "{} header edits (at most {HEADER_EDITS_MAX})",
                    edits.len()
                ));
            }
            edits.iter().try_for_each(check_header_edit)
        }
    }
}

fn check_header_edit(edit: &HeaderEdit) -> Result<(), String> {
    let (name, value) = match edit {
        HeaderEdit::Set((n, v)) | HeaderEdit::Append((n, v)) => (n, Some(v)),
        HeaderEdit::Remove(n) => (n, None),
    };
    let header = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("header edit: {name:?} is not a valid header name"))?;
    if RESERVED_HEADERS.contains(&header.as_str()) {
        return Err(format!(
            "header edit: `{header}` is reserved to the gateway"
        ));
    }
    if let Some(v) = value {
        http::HeaderValue::from_str(v).map_err(|_| {
            format!("header edit: the value for `{header}` is not a valid header value")
        })?;
    }
    Ok(())
}

/// Check a response-phase verdict against the contract and the plugin's descriptor.
pub fn check_response_verdict(
    v: &ResponseVerdict,
    d: &Descriptor,
    patterns: usize,
    stage: Stage,
) -> Result<(), String> {
    match v {
        ResponseVerdict::Pass => Ok(()),
        ResponseVerdict::NeedBody(n) => {
            if stage == Stage::Body {
                return Err("need-body from on-response-body".to_string());
            }
            if !d.phases.contains(Phases::RESPONSE_BODY) {
                return Err("need-body without declaring the response-body phase".to_string());
            }
            if *n == 0 || *n > d.response_body_limit {
                return Err(format!(
                    "need-body({n}) outside 1..={} (its declared response-body-limit)",
                    d.response_body_limit
                ));
            }
            Ok(())
        }
        ResponseVerdict::Mask(plan) => {
            if stage == Stage::Headers {
                return Err(
                    "mask from on-response: a plan needs the body; ask with need-body".into(),
                );
            }
            check_mask_plan(plan, patterns)
        }
        ResponseVerdict::Replace(r) => {
            if !(100..=599).contains(&r.status) {
                return Err(format!(
                    "replacement status {} is not in 100..=599",
                    r.status
                ));
            }
            if r.body.len() > REPLACEMENT_BODY_MAX {
                return Err(format!(
                    "replacement body of {} bytes (at most {REPLACEMENT_BODY_MAX})",
                    r.body.len()
                ));
            }
            if r.headers.len() > HEADER_EDITS_MAX {
                return Err(format!(
                    "{} replacement headers (at most {HEADER_EDITS_MAX})",
                    r.headers.len()
                ));
            }
            r.headers
                .iter()
                .try_for_each(|(n, v)| check_header_edit(&HeaderEdit::Set((n.clone(), v.clone()))))
        }
    }
}

fn check_mask_plan(plan: &MaskPlan, patterns: usize) -> Result<(), String> {
    if plan.edits.len() > MASK_EDITS_MAX {
        return Err(format!(
            "{} mask edits (at most {MASK_EDITS_MAX})",
            plan.edits.len()
        ));
    }
    if plan.findings.len() > FINDINGS_MAX {
        return Err(format!(
            "{} findings (at most {FINDINGS_MAX})",
            plan.findings.len()
        ));
    }
    for edit in &plan.edits {
        match &edit.target {
            MaskTarget::JsonPointer(p) => {
                if !(p.is_empty() || p.starts_with('/')) {
                    return Err(format!("mask pointer {p:?} does not start with '/'"));
                }
            }
            MaskTarget::Regex(r) => {
                if r.pattern as usize >= patterns {
                    return Err(format!(
                        "mask uses pattern {} but the plugin declared {patterns}",
                        r.pattern
                    ));
                }
                if let Check::MinEntropy(bits) = r.check
                    && !(bits.is_finite() && bits >= 0.0)
                {
                    return Err(format!(
                        "mask check min-entropy({bits}) is not a number ≥ 0"
                    ));
                }
            }
            MaskTarget::ByteRange(r) => {
                if r.start > r.end {
                    return Err(format!(
                        "mask byte range {}..{} is reversed",
                        r.start, r.end
                    ));
                }
            }
        }
        match &edit.strategy {
            Strategy::Redact(label) | Strategy::Hash(label) => bounded("mask label", label, 64)?,
            Strategy::Partial(_) => {}
        }
        if edit.kind.is_empty() {
            return Err("mask edit with an empty kind".to_string());
        }
        bounded("mask edit kind", &edit.kind, 64)?;
    }
    for f in &plan.findings {
        bounded("finding kind", &f.kind, 64)?;
        bounded("finding location", &f.location, 512)?;
    }
    Ok(())
}

fn bounded(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        Err(format!("{what} of {} bytes (at most {max})", s.len()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor() -> Descriptor {
        Descriptor {
            name: "mask".into(),
            version: "1.2.3-rc.1".into(),
            phases: Phases::RESPONSE_HEADERS | Phases::RESPONSE_BODY,
            request_body_limit: 0,
            response_body_limit: 1024,
            request_content_types: vec![],
            response_content_types: vec!["application/json".into(), "text/*".into()],
            patterns: vec![r"\d+".into()],
            config_schema: Some("{}".into()),
        }
    }

    #[test]
    fn a_sound_descriptor_compiles_its_patterns() {
        assert_eq!(check_descriptor(&descriptor()).unwrap().len(), 1);
    }

    #[test]
    fn every_descriptor_problem_is_listed() {
        let mut d = descriptor();
        d.name = "Bad Name".into();
        d.version = "one".into();
        d.response_body_limit = 0;
        d.response_content_types.push("json".into());
        d.patterns.push("(".into());
        let err = check_descriptor(&d).unwrap_err();
        for needle in [
            "name \"Bad Name\"",
            "version \"one\"",
            "body limit of 0",
            "\"json\"",
            "pattern 1",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }

    #[test]
    fn content_types_match_by_essence_and_wildcard() {
        let ranges = vec!["application/json".to_string(), "text/*".to_string()];
        assert!(offers(&ranges, Some("application/json; charset=utf-8")));
        assert!(offers(&ranges, Some("Text/Plain")));
        assert!(!offers(&ranges, Some("application/octet-stream")));
        assert!(!offers(&ranges, None));
        assert!(offers(&["*/*".to_string()], None));
    }

    #[test]
    fn verdicts_outside_the_contract_are_rejected() {
        let d = descriptor();
        let need = ResponseVerdict::NeedBody(4096);
        assert!(
            check_response_verdict(&need, &d, 1, Stage::Headers)
                .unwrap_err()
                .contains("1..=1024")
        );
        let plan = MaskPlan {
            edits: vec![],
            findings: vec![],
        };
        assert!(
            check_response_verdict(&ResponseVerdict::Mask(plan.clone()), &d, 1, Stage::Headers)
                .is_err()
        );
        assert!(check_response_verdict(&ResponseVerdict::Mask(plan), &d, 1, Stage::Body).is_ok());
        let edit =
            RequestVerdict::Modify(vec![HeaderEdit::Set(("Authorization".into(), "x".into()))]);
        assert!(
            check_request_verdict(&edit, &d, Stage::Headers)
                .unwrap_err()
                .contains("reserved")
        );
        let need = RequestVerdict::NeedBody(1);
        assert!(
            check_request_verdict(&need, &d, Stage::Headers)
                .unwrap_err()
                .contains("request-body phase")
        );
    }
}
