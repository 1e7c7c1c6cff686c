//! Which bodies are masked and the mask plan for each: plain functions of the configuration
//! and the Content-Type, so that they are tested natively.
use portcullis_sdk::{BodyKind, MaskPlan, MaskTarget, RegexTarget, Strategy};

use crate::config::{Check, Config, Masking};
use crate::detectors::DETECTORS;

/// The host's Content-Type rule, shared by every plugin through the SDK.
pub fn body_kind(content_type: Option<&str>) -> Option<BodyKind> {
    BodyKind::from_content_type(content_type)
}

/// The plan for a body of `kind`: for JSON the field rules (pointers), then the enabled
/// detectors in table order; for text the detectors only (the host refuses a pointer on text).
pub fn build(config: &Config, kind: BodyKind) -> MaskPlan {
    let mut plan = MaskPlan::new();
    if kind == BodyKind::Json {
        for field in &config.fields {
            plan = plan.json_pointer(&field.kind, &field.pointer, strategy(&field.masking));
        }
    }
    for (index, (detector, rule)) in DETECTORS.iter().zip(&config.detectors).enumerate() {
        let Some(rule) = rule else { continue };
        let target = RegexTarget {
            pattern: index as u32,
            group: detector.group,
            check: check(rule.check),
        };
        plan = plan.edit(
            detector.name,
            MaskTarget::Regex(target),
            strategy(&rule.masking),
        );
    }
    plan
}

/// Whether a body of `kind` has anything to mask under `config`.
pub fn masks_anything(config: &Config, kind: BodyKind) -> bool {
    config.detectors.iter().any(Option::is_some)
        || (kind == BodyKind::Json && !config.fields.is_empty())
}

/// The header-phase decision: `Some(limit)` to ask for up to `limit` bytes of the body, `None`
/// to let the response pass.
pub fn wants_body(config: &Config, content_type: Option<&str>) -> Option<u64> {
    body_kind(content_type)
        .filter(|&kind| masks_anything(config, kind))
        .map(|_| config.body_limit)
}

/// The body-phase decision: the plan, or `None` (pass) when there is nothing to mask.
pub fn plan_for(config: &Config, content_type: Option<&str>) -> Option<MaskPlan> {
    body_kind(content_type)
        .filter(|&kind| masks_anything(config, kind))
        .map(|kind| build(config, kind))
}

fn strategy(masking: &Masking) -> Strategy {
    match masking {
        Masking::Redact(label) => Strategy::Redact(label.clone()),
        Masking::Partial(keep) => Strategy::Partial(*keep),
        Masking::Hash(label) => Strategy::Hash(label.clone()),
    }
}

fn check(check: Check) -> portcullis_sdk::Check {
    match check {
        Check::None => portcullis_sdk::Check::None,
        Check::Luhn => portcullis_sdk::Check::Luhn,
        Check::Iban => portcullis_sdk::Check::Iban,
        Check::MinEntropy(bits) => portcullis_sdk::Check::MinEntropy(bits),
    }
}
