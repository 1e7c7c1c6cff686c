//! Host-native execution of plugins' mask plans on a response body: JSON pointers, host
//! regex ids and byte ranges, each rewritten with its strategy (redact, partial, hash).
//!
//! [`apply`] takes the plans of a chain, in chain order, and applies them together in one
//! pass over the body. Everything here fails closed: a plan the executor cannot carry out
//! exactly is an error, never a partly masked body.
//!
//! # Bodies
//! [`BodyKind::from_content_type`] says how a body is read: `application/json` and any
//! `+json` type as JSON; `text/*`, `application/xml`, any `+xml` type and
//! `application/x-www-form-urlencoded` as text; anything else (or no Content-Type) not at all
//! (`None`: the caller fails closed). The body must already be decoded (see [`crate::codec`]).
//!
//! # JSON bodies
//! - The body must be one valid JSON document in UTF-8 (RFC 8259; no byte order mark), else
//!   [`MaskError::NotJson`]. An escaped lone surrogate (`"\ud800"`) is refused too: it has no
//!   UTF-8 form to mask or to write back.
//! - `json-pointer` targets follow RFC 6901 (`~1` is `/`, `~0` is `~`; any other `~` escape is
//!   [`MaskError::BadPointer`]). A `*` segment matches every member of an object and every
//!   element of an array (so a member literally named `*` is matched by it too). `""` is the
//!   whole document. A pointer that matches nothing is not an error.
//! - What a pointer reaches is masked: a string value is masked whole; an object or array is
//!   masked member by member, recursively; a number or a boolean is replaced by the masked
//!   string of its JSON text, exactly as written in the body (`42` with `redact("AGE")`
//!   becomes `"[AGE]"`, with `partial(1)` becomes `"*2"`), so its type changes to string;
//!   `null` is left alone. Object keys are never masked.
//! - `regex` targets apply inside string values only: every string value of the document
//!   (never keys, numbers or literals), after JSON unescaping, so the document stays valid JSON.
//! - `byte-range` targets are [`MaskError::ByteRangeOnJson`].
//! - The output is the input with only the masked values rewritten: whitespace, member order,
//!   number spelling and the escapes of untouched strings are kept byte for byte. (Rewriting
//!   through a parsed `serde_json::Value` would round large integers and high-precision
//!   numbers, drop duplicate members, and cost a tree allocation per node.) A rewritten value
//!   is written back as a JSON string with minimal escaping.
//!
//! # Text bodies
//! The body must be UTF-8 ([`MaskError::NotUtf8`]). `regex` targets and `byte-range` targets
//! apply to the whole text. A byte range must be in bounds with both ends on character
//! boundaries ([`MaskError::BadRange`]); an empty range masks nothing. `json-pointer` targets on
//! a text body are [`MaskError::PointerOnText`]: silently ignoring them would leak what the
//! plugin meant to hide. Form bodies are matched as written, percent-encoding included.
//!
//! # Regex targets
//! `pattern` indexes the patterns of the plan's own plugin ([`MaskError::UnknownPattern`]
//! otherwise); `group` n masks capture group n of every match (0: the whole match;
//! [`MaskError::UnknownGroup`] when the pattern has no such group). A match where the group did
//! not take part, and an empty match, mask nothing.
//!
//! A target's `check` then looks at the text to be masked (the group, or the whole match) and
//! keeps only the real values, so that look-alikes stay readable:
//! - `luhn`: 12 to 19 digits, single spaces or dashes between them ignored, nothing else,
//!   passing the Luhn checksum (payment cards; an order number that fails it is kept).
//! - `iban`: ISO 13616 — two letters, two check digits, 11 to 30 letters or digits (15 to 34 in
//!   all; spaces ignored, letters in either case), whose mod-97 remainder is 1.
//! - `min-entropy(b)`: a Shannon entropy of at least `b` bits per character (secrets: a UUID or
//!   a hex digest has at most 4). A check with a value that is not a finite number is refused
//!   by the contract checks before a plan gets here; here it masks nothing.
//!
//! # Overlaps
//! Within one string value (or the whole text), the spans of every edit of every plan are
//! collected; spans that overlap (share at least one byte) are merged, transitively, into their
//! union, and the union is rewritten with the strategy of the earliest edit among those merged
//! (earliest plan in chain order, then earliest edit in the plan). Spans that only touch are
//! rewritten separately. So no value is ever half masked by overlapping edits. A value a
//! pointer reaches is one span covering the whole value.
//!
//! # Strategies
//! - `redact(label)` writes `[label]`.
//! - `partial(n)` keeps the last n characters (Unicode scalar values, not bytes) and writes `*`
//!   for each earlier one. A value of n characters or fewer becomes all `*`: a short secret is
//!   never revealed whole.
//! - `hash(label)` writes `[label:h]` where h is the first 16 hex digits of
//!   HMAC-SHA-256(operator key, value bytes): stable across requests, so masked values still
//!   correlate, and unguessable without the key. Without a key (or with an empty one) any plan
//!   that uses `hash` is [`MaskError::NoHashKey`], whether or not it would match.
//!
//! # Result
//! [`Masked::masked`] counts the values and spans a strategy was applied to. When the output
//! is byte for byte the input, [`Masked::body`] is a copy of the input and `changed` is false.
//!
//! [`Masked::findings`] says what was masked where, for the audit log, never the values: per
//! edit `kind` (of the edit whose strategy was applied) and location, how many values and spans.
//! The location of a text body is `body`; in a JSON body it is the JSON pointer of the value,
//! with every array index written `*` (a listing of a thousand items gives one finding per
//! field, not a thousand). At most [`FINDINGS_MAX`] (kind, location) pairs are kept; the counts
//! of any further ones go to their kind's location `(more)`. Findings are sorted by kind, then
//! location.
//!
//! # Cost
//! One validating pass over a JSON body (no tree, no recursion; at most [`MAX_DEPTH`] nested
//! containers, else [`MaskError::TooDeep`]). Each string value that a regex edit may decide is
//! asked once whether any pattern of the program matches in it (one [`regex::RegexSet`] of
//! them all); only a value some pattern matches in is searched for spans, and only with the
//! patterns that match in it. Whether a member name must be hidden from locations is worked
//! out once per distinct name. The output is built only once something is rewritten, by
//! copying the untouched bytes around the rewritten values.
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::plugin::{Check, Finding, MaskPlan, MaskTarget, Strategy};

/// How a body is read for masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// One JSON document: pointers and regexes inside string values.
    Json,
    /// UTF-8 text: regexes and byte ranges over the whole text.
    Text,
}

impl BodyKind {
    /// How a body of this Content-Type is masked: `application/json` and any `+json` type are
    /// [`BodyKind::Json`]; `text/*`, `application/xml`, any `+xml` type and
    /// `application/x-www-form-urlencoded` are [`BodyKind::Text`]; anything else, or no
    /// Content-Type, is `None` (the caller fails closed). Parameters and case are ignored.
    pub fn from_content_type(ct: Option<&str>) -> Option<BodyKind> {
        let essence = ct?.split(';').next()?.trim().to_ascii_lowercase();
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

/// One plugin's mask plan, with the host-compiled patterns its regex targets index into.
#[derive(Debug, Clone, Copy)]
pub struct PlanRef<'a> {
    /// The plan the plugin returned.
    pub plan: &'a MaskPlan,
    /// The plugin's patterns (`Plugin::patterns`).
    pub patterns: &'a [regex::Regex],
}

/// The outcome of [`apply`].
#[derive(Debug, Clone)]
pub struct Masked {
    /// The masked body (the input itself when nothing changed).
    pub body: Vec<u8>,
    /// Whether `body` differs from the input.
    pub changed: bool,
    /// How many values and spans a strategy was applied to.
    pub masked: usize,
    /// What was masked where (see the module documentation). Never the values.
    pub findings: Vec<Finding>,
}

/// Why a body could not be masked. Never carries body content or matched values.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// The body is not one valid JSON document.
    #[error("body is not valid JSON (at byte {offset})")]
    NotJson {
        /// Byte offset where parsing failed.
        offset: usize,
    },
    /// The JSON body nests containers deeper than [`MAX_DEPTH`].
    #[error("JSON body nests deeper than {limit} levels")]
    TooDeep {
        /// The depth limit.
        limit: usize,
    },
    /// The body is not UTF-8.
    #[error("body is not UTF-8 (at byte {offset})")]
    NotUtf8 {
        /// Length of the valid UTF-8 prefix.
        offset: usize,
    },
    /// A byte-range target on a JSON body.
    #[error("plan {plan} uses a byte range on a JSON body")]
    ByteRangeOnJson {
        /// Position of the plan in the chain.
        plan: usize,
    },
    /// A JSON pointer target on a text body.
    #[error("plan {plan} uses a JSON pointer on a text body")]
    PointerOnText {
        /// Position of the plan in the chain.
        plan: usize,
    },
    /// A byte range out of bounds, reversed, or splitting a character.
    #[error(
        "plan {plan}: byte range {start}..{end} is reversed, past {len} bytes or mid-character"
    )]
    BadRange {
        /// Position of the plan in the chain.
        plan: usize,
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
        /// Length of the body.
        len: usize,
    },
    /// A regex target names a pattern its plugin did not declare.
    #[error("plan {plan} uses pattern {pattern} but its plugin has {patterns}")]
    UnknownPattern {
        /// Position of the plan in the chain.
        plan: usize,
        /// The pattern index asked for.
        pattern: u32,
        /// How many patterns the plugin has.
        patterns: usize,
    },
    /// A regex target names a capture group its pattern does not have.
    #[error("plan {plan} masks group {group} of pattern {pattern}, which has {groups} groups")]
    UnknownGroup {
        /// Position of the plan in the chain.
        plan: usize,
        /// The pattern index.
        pattern: u32,
        /// The group asked for.
        group: u32,
        /// How many groups the pattern has, counting group 0.
        groups: usize,
    },
    /// A JSON pointer that is not RFC 6901 (does not start with `/`, or a bad `~` escape).
    #[error("plan {plan} edit {edit} has an invalid JSON pointer")]
    BadPointer {
        /// Position of the plan in the chain.
        plan: usize,
        /// Position of the edit in the plan.
        edit: usize,
    },
    /// A plan uses the hash strategy and the operator configured no hash key.
    #[error("a mask plan uses the hash strategy but no hash key is configured")]
    NoHashKey,
    /// The masked body is one part (`Content-Range`) of a larger resource: the client would
    /// put together parts masked separately, at offsets that no longer agree.
    #[error(
        "the response is a partial range of a larger resource and masking changed it; \
         request the whole resource"
    )]
    PartialContent,
}

/// The `Content-Range` of a masked body of `len` bytes, from the upstream's `range`: a range
/// that was the whole resource (`bytes 0-N/N+1`) becomes the whole masked body; a part of a
/// larger (or unknown-size) resource is [`MaskError::PartialContent`].
pub fn masked_range(range: &str, len: usize) -> Result<String, MaskError> {
    let whole = range
        .strip_prefix("bytes 0-")
        .and_then(|r| r.split_once('/'))
        .and_then(|(last, total)| Some((last.parse::<u64>().ok()?, total.parse::<u64>().ok()?)))
        .is_some_and(|(last, total)| last.checked_add(1) == Some(total));
    if !whole || len == 0 {
        return Err(MaskError::PartialContent);
    }
    Ok(format!("bytes 0-{}/{len}", len - 1))
}

/// Apply every plan, in chain order, to `body`. `hash_key` is the operator's key for
/// [`Strategy::Hash`]; see the module documentation for the exact semantics.
pub fn apply(
    body: &[u8],
    kind: BodyKind,
    plans: &[PlanRef<'_>],
    hash_key: Option<&[u8]>,
) -> Result<Masked, MaskError> {
    let program = Program::compile(kind, plans, hash_key)?;
    let text = std::str::from_utf8(body).map_err(|e| match kind {
        BodyKind::Json => MaskError::NotJson {
            offset: e.valid_up_to(),
        },
        BodyKind::Text => MaskError::NotUtf8 {
            offset: e.valid_up_to(),
        },
    })?;
    let mut findings = Findings::default();
    let (out, masked) = match kind {
        BodyKind::Json => JsonMasker::new(text, &program, &mut findings).run()?,
        BodyKind::Text => mask_text(text, &program, &mut findings)?,
    };
    let findings = findings.into_list();
    Ok(match out {
        Some(out) if out != body => Masked {
            body: out,
            changed: true,
            masked,
            findings,
        },
        _ => Masked {
            body: body.to_vec(),
            changed: false,
            masked,
            findings,
        },
    })
}

/// Findings as one line for a log: `kind at location ×count`, comma-separated.
pub fn summarize<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> String {
    let mut line = String::new();
    for f in findings {
        if !line.is_empty() {
            line.push_str(", ");
        }
        let _ = write!(line, "{} at {} ×{}", f.kind, f.location, f.count);
    }
    line
}

/// Most distinct (kind, location) pairs reported for one body.
pub const FINDINGS_MAX: usize = 256;

/// Counts of masked values by (edit kind, location), bounded by [`FINDINGS_MAX`]. Looked up
/// without allocating: a masked listing counts thousands of values at a handful of locations.
#[derive(Default)]
struct Findings {
    /// Count by location, by kind.
    counts: foldhash::HashMap<String, foldhash::HashMap<String, u32>>,
    /// Number of (kind, location) pairs in `counts`.
    pairs: usize,
}

impl Findings {
    /// Count `n` values masked by edit `id` at `location`.
    fn add(&mut self, program: &Program<'_>, id: EditId, location: &str, n: usize) {
        let kind = program.kinds.get(id as usize).copied().unwrap_or_default();
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if !self.counts.contains_key(kind) {
            self.counts
                .insert(kind.to_owned(), foldhash::HashMap::default());
        }
        let Some(by_location) = self.counts.get_mut(kind) else {
            return;
        };
        let count = match by_location.get_mut(location) {
            Some(count) => count,
            None => {
                let location = if self.pairs < FINDINGS_MAX {
                    location
                } else {
                    "(more)"
                };
                if !by_location.contains_key(location) {
                    self.pairs += 1;
                }
                by_location.entry(location.to_owned()).or_default()
            }
        };
        *count = count.saturating_add(n);
    }

    /// The findings sorted by kind, then location.
    fn into_list(self) -> Vec<Finding> {
        let mut list: Vec<Finding> = self
            .counts
            .into_iter()
            .flat_map(|(kind, by_location)| {
                by_location
                    .into_iter()
                    .map(move |(location, count)| Finding {
                        kind: kind.clone(),
                        count,
                        location,
                    })
            })
            .collect();
        list.sort_unstable_by(|a, b| (&a.kind, &a.location).cmp(&(&b.kind, &b.location)));
        list
    }
}

/// Most containers open at once in a JSON body: each costs a frame of state, so a body of
/// nothing but `[` must not cost dozens of times its size. Far above any real document.
pub const MAX_DEPTH: usize = 1024;

/// Edits are numbered in chain order, then plan order: the lower id wins an overlap.
type EditId = u32;

/// The plans, checked and flattened for one pass over the body.
struct Program<'a> {
    /// Strategy of each edit, by id.
    strategies: Vec<&'a Strategy>,
    /// Kind of each edit, by id: what its findings are called.
    kinds: Vec<&'a str>,
    pointers: Vec<Pointer>,
    /// Regex edits, in id order.
    regexes: Vec<RegexEdit<'a>>,
    /// All their patterns as one set (see [`union_of`]).
    union: Option<Arc<regex::RegexSet>>,
    ranges: Vec<RangeEdit>,
    mac: Option<Hmac<Sha256>>,
}

struct Pointer {
    id: EditId,
    segments: Vec<Segment>,
}

enum Segment {
    /// `*`: every member or element.
    Any,
    /// A member name, or an element index when it is one (RFC 6901: digits, no leading zero).
    Name { name: String, index: Option<usize> },
}

impl Segment {
    fn matches(&self, key: Key<'_>) -> bool {
        match (self, key) {
            (Segment::Any, _) => true,
            (Segment::Name { name, .. }, Key::Name(k)) => name == k,
            (Segment::Name { index, .. }, Key::Index(i)) => *index == Some(i),
        }
    }
}

/// How a value is reached from its container.
#[derive(Clone, Copy)]
enum Key<'k> {
    Name(&'k str),
    Index(usize),
}

struct RegexEdit<'a> {
    id: EditId,
    re: &'a regex::Regex,
    group: usize,
    check: Check,
}

struct RangeEdit {
    id: EditId,
    plan: usize,
    start: u64,
    end: u64,
}

impl<'a> Program<'a> {
    fn compile(
        kind: BodyKind,
        plans: &[PlanRef<'a>],
        hash_key: Option<&[u8]>,
    ) -> Result<Program<'a>, MaskError> {
        let mut program = Program {
            strategies: Vec::new(),
            kinds: Vec::new(),
            pointers: Vec::new(),
            regexes: Vec::new(),
            union: None,
            ranges: Vec::new(),
            mac: None,
        };
        let mut uses_hash = false;
        for (plan_at, plan) in plans.iter().enumerate() {
            for (edit_at, edit) in plan.plan.edits.iter().enumerate() {
                let id = EditId::try_from(program.strategies.len()).unwrap_or(EditId::MAX);
                program.strategies.push(&edit.strategy);
                program.kinds.push(&edit.kind);
                uses_hash |= matches!(edit.strategy, Strategy::Hash(_));
                match &edit.target {
                    MaskTarget::JsonPointer(p) => {
                        if kind == BodyKind::Text {
                            return Err(MaskError::PointerOnText { plan: plan_at });
                        }
                        let segments = parse_pointer(p).ok_or(MaskError::BadPointer {
                            plan: plan_at,
                            edit: edit_at,
                        })?;
                        program.pointers.push(Pointer { id, segments });
                    }
                    MaskTarget::Regex(r) => {
                        let re = plan.patterns.get(r.pattern as usize).ok_or(
                            MaskError::UnknownPattern {
                                plan: plan_at,
                                pattern: r.pattern,
                                patterns: plan.patterns.len(),
                            },
                        )?;
                        let group = r.group as usize;
                        if group >= re.captures_len() {
                            return Err(MaskError::UnknownGroup {
                                plan: plan_at,
                                pattern: r.pattern,
                                group: r.group,
                                groups: re.captures_len(),
                            });
                        }
                        program.regexes.push(RegexEdit {
                            id,
                            re,
                            group,
                            check: r.check,
                        });
                    }
                    MaskTarget::ByteRange(r) => {
                        if kind == BodyKind::Json {
                            return Err(MaskError::ByteRangeOnJson { plan: plan_at });
                        }
                        program.ranges.push(RangeEdit {
                            id,
                            plan: plan_at,
                            start: r.start,
                            end: r.end,
                        });
                    }
                }
            }
        }
        if uses_hash {
            let key = hash_key
                .filter(|k| !k.is_empty())
                .ok_or(MaskError::NoHashKey)?;
            program.mac =
                Some(<Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| MaskError::NoHashKey)?);
        }
        program.union = union_of(&program.regexes);
        Ok(program)
    }

    /// The regex edits earlier than edit `below` whose pattern matches somewhere in `value`,
    /// in id order: the only ones that can find a span in it. One question to the union of all
    /// patterns (none of them, most of the time), and for a value some match in, which ones;
    /// without a union, every edit earlier than `below`.
    fn candidates(&self, value: &str, below: EditId) -> impl Iterator<Item = &RegexEdit<'a>> {
        let edits = (self.regexes)
            .get(..self.regexes.partition_point(|edit| edit.id < below))
            .unwrap_or_default();
        // `None`: every edit may match; `Some(None)`: none does.
        let matching = self
            .union
            .as_ref()
            .filter(|_| !edits.is_empty())
            .map(|union| union.is_match(value).then(|| union.matches(value)));
        (edits.iter().enumerate())
            .filter(move |(i, _)| match &matching {
                None => true,
                Some(None) => false,
                Some(Some(m)) => m.matched(*i),
            })
            .map(|(_, edit)| edit)
    }

    /// Rewrite `value` into `out`: the merged `spans` with their strategies, the rest as is,
    /// counting each span in `findings` at `location`. Returns how many spans were rewritten.
    fn rewrite(
        &self,
        value: &str,
        spans: &[Span],
        out: &mut String,
        findings: &mut Findings,
        location: &str,
    ) -> usize {
        let mut at = 0;
        for span in spans {
            findings.add(self, span.id, location, 1);
            out.push_str(value.get(at..span.start).unwrap_or_default());
            self.write_masked(
                value.get(span.start..span.end).unwrap_or_default(),
                span.id,
                out,
            );
            at = span.end;
        }
        out.push_str(value.get(at..).unwrap_or_default());
        spans.len()
    }

    /// Write `value` masked with the strategy of edit `id`.
    fn write_masked(&self, value: &str, id: EditId, out: &mut String) {
        let Some(strategy) = self.strategies.get(id as usize) else {
            // Unreachable: ids come from `strategies`. Fail closed all the same.
            out.extend(std::iter::repeat_n('*', value.chars().count()));
            return;
        };
        match strategy {
            Strategy::Redact(label) => {
                out.push('[');
                out.push_str(label);
                out.push(']');
            }
            Strategy::Partial(keep) => {
                let total = value.chars().count();
                let keep = *keep as usize;
                if total <= keep {
                    out.extend(std::iter::repeat_n('*', total));
                } else {
                    out.extend(std::iter::repeat_n('*', total - keep));
                    let tail = value
                        .char_indices()
                        .nth(total - keep)
                        .map_or("", |(i, _)| value.get(i..).unwrap_or_default());
                    out.push_str(tail);
                }
            }
            Strategy::Hash(label) => {
                out.push('[');
                out.push_str(label);
                out.push(':');
                match &self.mac {
                    Some(mac) => {
                        let mut mac = mac.clone();
                        mac.update(value.as_bytes());
                        let digest = mac.finalize().into_bytes();
                        for b in digest.iter().take(8) {
                            out.push(HEX[usize::from(b >> 4)].into());
                            out.push(HEX[usize::from(b & 15)].into());
                        }
                    }
                    // Unreachable: compile refuses hash without a key. Reveal nothing.
                    None => out.push_str("????????????????"),
                }
                out.push(']');
            }
        }
    }
}

impl RegexEdit<'_> {
    /// Add the non-empty spans this edit masks in `value` to `spans`.
    fn find_spans(&self, value: &str, spans: &mut Vec<Span>) {
        let keep = |m: &regex::Match<'_>| !m.is_empty() && passes(self.check, m.as_str());
        if self.group == 0 {
            spans.extend(self.re.find_iter(value).filter(keep).map(|m| Span {
                start: m.start(),
                end: m.end(),
                id: self.id,
            }));
        } else if self.re.is_match(value) {
            // Most values do not match: find that out without allocating capture slots.
            for caps in self.re.captures_iter(value) {
                if let Some(m) = caps.get(self.group).filter(keep) {
                    spans.push(Span {
                        start: m.start(),
                        end: m.end(),
                        id: self.id,
                    });
                }
            }
        }
    }
}

/// Whether `text` passes a regex target's check (see the module documentation).
fn passes(check: Check, text: &str) -> bool {
    match check {
        Check::None => true,
        Check::Luhn => luhn(text),
        Check::Iban => iban(text),
        Check::MinEntropy(bits) => bits.is_finite() && entropy(text) >= f64::from(bits),
    }
}

/// 12 to 19 digits, single spaces or dashes between them allowed, passing the Luhn checksum.
fn luhn(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut digits = 0usize;
    let mut sum = 0u32;
    // From the right, every second digit doubled.
    for (i, &b) in bytes.iter().enumerate().rev() {
        match b {
            b'0'..=b'9' => {
                let d = u32::from(b - b'0');
                sum += if digits % 2 == 1 {
                    if d > 4 { d * 2 - 9 } else { d * 2 }
                } else {
                    d
                };
                digits += 1;
            }
            b' ' | b'-' => {
                let between = i > 0
                    && i + 1 < bytes.len()
                    && bytes[i - 1].is_ascii_digit()
                    && bytes[i + 1].is_ascii_digit();
                if !between {
                    return false;
                }
            }
            _ => return false,
        }
    }
    (12..=19).contains(&digits) && sum.is_multiple_of(10)
}

/// An IBAN (ISO 13616): country letters, check digits, 11 to 30 alphanumerics; mod 97 is 1.
fn iban(text: &str) -> bool {
    let compact: Vec<u8> = text
        .bytes()
        .filter(|&b| b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    let shaped = (15..=34).contains(&compact.len())
        && compact[..2].iter().all(u8::is_ascii_uppercase)
        && compact[2..4].iter().all(u8::is_ascii_digit)
        && compact[4..].iter().all(u8::is_ascii_alphanumeric);
    if !shaped {
        return false;
    }
    // The first four characters move to the end; letters count as 10..=35.
    let mut rest = 0u32;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        rest = if b.is_ascii_digit() {
            (rest * 10 + u32::from(b - b'0')) % 97
        } else {
            (rest * 100 + u32::from(b - b'A') + 10) % 97
        };
    }
    rest == 1
}

/// Shannon entropy of `text` in bits per character.
fn entropy(text: &str) -> f64 {
    let mut counts: std::collections::HashMap<char, u32> = std::collections::HashMap::new();
    let mut total = 0u32;
    for c in text.chars() {
        *counts.entry(c).or_default() += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    let total = f64::from(total);
    counts
        .values()
        .map(|&n| {
            let p = f64::from(n) / total;
            -p * p.log2()
        })
        .sum()
}

/// RFC 6901: `""` or `/`-separated segments with `~1` → `/` and `~0` → `~`.
fn parse_pointer(pointer: &str) -> Option<Vec<Segment>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    pointer
        .strip_prefix('/')?
        .split('/')
        .map(|raw| {
            if raw == "*" {
                return Some(Segment::Any);
            }
            let mut name = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next()? {
                        '0' => name.push('~'),
                        '1' => name.push('/'),
                        _ => return None,
                    }
                } else {
                    name.push(c);
                }
            }
            let canonical = name == "0" || (!name.starts_with('0') && !name.is_empty());
            let index = if canonical && name.bytes().all(|b| b.is_ascii_digit()) {
                name.parse().ok()
            } else {
                None
            };
            Some(Segment::Name { name, index })
        })
        .collect()
}

/// A byte span of a value (or text) masked by edit `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    id: EditId,
}

/// Merge overlapping spans (transitively) into their union, keeping the lowest id; spans
/// that only touch stay apart. Empty spans are dropped.
fn merge_spans(spans: &mut Vec<Span>) {
    spans.retain(|s| s.start < s.end);
    if spans.len() < 2 {
        return;
    }
    spans.sort_unstable_by_key(|s| (s.start, s.end, s.id));
    let mut merged = 0;
    for i in 1..spans.len() {
        let next = spans[i];
        let current = &mut spans[merged];
        if next.start < current.end {
            current.end = current.end.max(next.end);
            current.id = current.id.min(next.id);
        } else {
            merged += 1;
            spans[merged] = next;
        }
    }
    spans.truncate(merged + 1);
}

/// Mask a text body: regexes and byte ranges over the whole text.
fn mask_text(
    text: &str,
    program: &Program<'_>,
    findings: &mut Findings,
) -> Result<(Option<Vec<u8>>, usize), MaskError> {
    let mut spans = Vec::new();
    for r in &program.ranges {
        let bad = || MaskError::BadRange {
            plan: r.plan,
            start: r.start,
            end: r.end,
            len: text.len(),
        };
        let start = usize::try_from(r.start).map_err(|_| bad())?;
        let end = usize::try_from(r.end).map_err(|_| bad())?;
        if start > end
            || end > text.len()
            || !text.is_char_boundary(start)
            || !text.is_char_boundary(end)
        {
            return Err(bad());
        }
        spans.push(Span {
            start,
            end,
            id: r.id,
        });
    }
    for edit in program.candidates(text, EditId::MAX) {
        edit.find_spans(text, &mut spans);
    }
    merge_spans(&mut spans);
    if spans.is_empty() {
        return Ok((None, 0));
    }
    let mut out = String::with_capacity(text.len());
    let masked = program.rewrite(text, &spans, &mut out, findings, "body");
    Ok((Some(out.into_bytes()), masked))
}

/// One open object or array while walking a JSON document.
#[derive(Default)]
struct Frame {
    object: bool,
    /// Number of segments of this container's path.
    depth: usize,
    /// Index of the current element (arrays).
    index: usize,
    /// The current member's name as written, and whether it has escapes (objects).
    key: (usize, usize, bool),
    /// Whether a regex edit matches that name (so a location must not show it); `None`: not
    /// worked out yet.
    key_hidden: Option<bool>,
    /// The earliest pointer edit that reaches this container (or an ancestor).
    covered: Option<EditId>,
    /// Pointers (indices into `Program::pointers`) whose first `depth` segments match this
    /// container's path and that have segments left.
    alive: Vec<usize>,
}

/// Every pattern of a program's regex edits as one [`regex::RegexSet`], to ask once per string
/// value whether any of them matches in it (most values match none: searching them with each
/// pattern in turn was most of the executor's time) and, for a value some do, which ones: only
/// those search it for spans. Each value is searched as a haystack of its own, so the set
/// reports exactly the patterns that a search of that value with each would find a match of.
/// Compiled once per distinct list of patterns (a plugin's plans repeat from one response to
/// the next) and kept in a bounded cache. `None` when it does not compile within
/// [`UNION_SIZE_MAX`], or when there are no regex edits: then every value is searched with
/// every pattern.
fn union_of(regexes: &[RegexEdit<'_>]) -> Option<Arc<regex::RegexSet>> {
    type Cache = quick_cache::sync::Cache<Vec<String>, Option<Arc<regex::RegexSet>>>;
    static UNIONS: LazyLock<Cache> = LazyLock::new(|| Cache::new(64));
    if regexes.is_empty() {
        return None;
    }
    let key: Vec<String> = regexes.iter().map(|e| e.re.as_str().to_owned()).collect();
    UNIONS
        .get_or_insert_with(&key, || {
            Ok::<_, std::convert::Infallible>(
                regex::RegexSetBuilder::new(&key)
                    .size_limit(UNION_SIZE_MAX)
                    .build()
                    .ok()
                    .map(Arc::new),
            )
        })
        .ok()
        .flatten()
}

/// Lower-case hexadecimal digits.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Compiled size limit of a union of patterns.
const UNION_SIZE_MAX: usize = 8 << 20;

/// How many distinct member names a masking pass remembers the answer for (whether a regex
/// edit matches them); names past that are searched each time they are needed.
const HIDDEN_NAMES_MAX: usize = 4096;

/// One pass over a JSON document: validates it (RFC 8259) and rewrites the values that a
/// pointer reaches or a regex matches, copying everything else as is.
struct JsonMasker<'p, 'b, 'f> {
    src: &'b str,
    bytes: &'b [u8],
    pos: usize,
    program: &'p Program<'p>,
    findings: &'f mut Findings,
    /// The location of the value being masked, built only when something is.
    location: String,
    /// The rewritten body so far; `None` until the first rewrite.
    out: Option<Vec<u8>>,
    /// Bytes of the input already copied to (or replaced in) `out`.
    copied: usize,
    masked: usize,
    /// Open containers; `frames[..open]` are live, the rest keep their allocations.
    frames: Vec<Frame>,
    open: usize,
    /// What reaches the value about to be parsed.
    next_covered: Option<EditId>,
    next_alive: Vec<usize>,
    /// Whether a regex edit matches a member name, by name (see [`JsonMasker::locate`]).
    hidden_names: foldhash::HashMap<String, bool>,
    /// Reused buffers.
    unescaped: String,
    key: String,
    rewritten: String,
    spans: Vec<Span>,
}

impl<'p, 'b, 'f> JsonMasker<'p, 'b, 'f> {
    fn new(src: &'b str, program: &'p Program<'p>, findings: &'f mut Findings) -> Self {
        let mut next_covered = None;
        let mut next_alive = Vec::new();
        for (i, p) in program.pointers.iter().enumerate() {
            if p.segments.is_empty() {
                next_covered = Some(next_covered.map_or(p.id, |c: EditId| c.min(p.id)));
            } else {
                next_alive.push(i);
            }
        }
        JsonMasker {
            src,
            bytes: src.as_bytes(),
            pos: 0,
            program,
            findings,
            location: String::new(),
            out: None,
            copied: 0,
            masked: 0,
            frames: Vec::new(),
            open: 0,
            next_covered,
            next_alive,
            hidden_names: foldhash::HashMap::default(),
            unescaped: String::new(),
            key: String::new(),
            rewritten: String::new(),
            spans: Vec::new(),
        }
    }

    fn not_json(&self) -> MaskError {
        MaskError::NotJson { offset: self.pos }
    }

    fn run(mut self) -> Result<(Option<Vec<u8>>, usize), MaskError> {
        'value: loop {
            self.skip_ws();
            match self.bytes.get(self.pos).copied() {
                Some(b'{') => {
                    self.pos += 1;
                    self.open_container(true)?;
                    self.skip_ws();
                    if self.bytes.get(self.pos) == Some(&b'}') {
                        self.pos += 1;
                        self.open -= 1;
                    } else {
                        self.member()?;
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.open_container(false)?;
                    self.skip_ws();
                    if self.bytes.get(self.pos) == Some(&b']') {
                        self.pos += 1;
                        self.open -= 1;
                    } else {
                        self.element(0);
                        continue 'value;
                    }
                }
                Some(b'"') => self.string_value()?,
                Some(b't') => self.literal("true", true)?,
                Some(b'f') => self.literal("false", true)?,
                Some(b'n') => self.literal("null", false)?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(self.not_json()),
            }
            // A value is complete: move to the next member or element, closing containers.
            loop {
                self.skip_ws();
                let Some(top) = self.open.checked_sub(1) else {
                    break 'value;
                };
                let object = self.frames[top].object;
                match (object, self.bytes.get(self.pos).copied()) {
                    (true, Some(b',')) => {
                        self.pos += 1;
                        self.member()?;
                        continue 'value;
                    }
                    (false, Some(b',')) => {
                        self.pos += 1;
                        let index = self.frames[top].index + 1;
                        self.frames[top].index = index;
                        self.element(index);
                        continue 'value;
                    }
                    (true, Some(b'}')) | (false, Some(b']')) => {
                        self.pos += 1;
                        self.open -= 1;
                    }
                    _ => return Err(self.not_json()),
                }
            }
        }
        if self.pos != self.bytes.len() {
            return Err(self.not_json());
        }
        let out = self.out.map(|mut out| {
            out.extend_from_slice(self.bytes.get(self.copied..).unwrap_or_default());
            out
        });
        Ok((out, self.masked))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Open an object or array reached as `next_*` says.
    fn open_container(&mut self, object: bool) -> Result<(), MaskError> {
        if self.open == MAX_DEPTH {
            return Err(MaskError::TooDeep { limit: MAX_DEPTH });
        }
        let depth = match self.open.checked_sub(1) {
            Some(top) => self.frames[top].depth + 1,
            None => 0,
        };
        if self.frames.len() == self.open {
            self.frames.push(Frame::default());
        }
        let frame = &mut self.frames[self.open];
        frame.object = object;
        frame.depth = depth;
        frame.index = 0;
        frame.covered = self.next_covered;
        std::mem::swap(&mut frame.alive, &mut self.next_alive);
        self.open += 1;
        Ok(())
    }

    /// Work out what reaches the child `key` of the innermost open container.
    #[inline]
    fn reach(&mut self, key: Key<'_>) {
        self.next_alive.clear();
        let Some(top) = self.open.checked_sub(1) else {
            return;
        };
        let frame = &self.frames[top];
        let mut covered = frame.covered;
        if frame.alive.is_empty() {
            self.next_covered = covered;
            return;
        }
        for &p in &frame.alive {
            let pointer = &self.program.pointers[p];
            if pointer
                .segments
                .get(frame.depth)
                .is_some_and(|s| s.matches(key))
            {
                if pointer.segments.len() == frame.depth + 1 {
                    covered = Some(covered.map_or(pointer.id, |c| c.min(pointer.id)));
                } else {
                    self.next_alive.push(p);
                }
            }
        }
        self.next_covered = covered;
    }

    fn element(&mut self, index: usize) {
        self.reach(Key::Index(index));
    }

    /// Parse `"key" :` and work out what reaches the member's value.
    fn member(&mut self) -> Result<(), MaskError> {
        self.skip_ws();
        if self.bytes.get(self.pos) != Some(&b'"') {
            return Err(self.not_json());
        }
        let (start, end, escaped) = self.string()?;
        self.skip_ws();
        if self.bytes.get(self.pos) != Some(&b':') {
            return Err(self.not_json());
        }
        self.pos += 1;
        let top = self.open - 1;
        self.frames[top].key = (start, end, escaped);
        self.frames[top].key_hidden = None;
        if self.frames[top].alive.is_empty() {
            self.next_alive.clear();
            self.next_covered = self.frames[top].covered;
            return Ok(());
        }
        let raw = self.src.get(start..end).unwrap_or_default();
        if escaped {
            let mut key = std::mem::take(&mut self.key);
            key.clear();
            let ok = unescape(raw, &mut key);
            if ok {
                self.reach(Key::Name(&key));
            }
            self.key = key;
            if !ok {
                return Err(MaskError::NotJson { offset: start });
            }
        } else {
            self.reach(Key::Name(raw));
        }
        Ok(())
    }

    /// Scan a string starting at its opening quote; returns the byte range of its content and
    /// whether it has escapes. Leaves `pos` after the closing quote.
    fn string(&mut self) -> Result<(usize, usize, bool), MaskError> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            self.pos += plain_run(self.bytes.get(self.pos..).unwrap_or_default());
            match self.bytes.get(self.pos).copied() {
                Some(b'"') => {
                    let end = self.pos;
                    self.pos += 1;
                    return Ok((start, end, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return Err(self.not_json()),
            }
        }
    }

    /// Validate one escape at `pos` (a backslash) and step over it.
    fn escape(&mut self) -> Result<(), MaskError> {
        match self.bytes.get(self.pos + 1).copied() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 2;
                Ok(())
            }
            Some(b'u') => {
                let unit = self.hex4(self.pos + 2)?;
                self.pos += 6;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by an escaped low surrogate.
                        if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.not_json());
                        }
                        let low = self.hex4(self.pos + 2)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(self.not_json());
                        }
                        self.pos += 6;
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(self.not_json()),
                    _ => Ok(()),
                }
            }
            _ => Err(self.not_json()),
        }
    }

    fn hex4(&self, at: usize) -> Result<u32, MaskError> {
        let digits = self
            .bytes
            .get(at..at + 4)
            .ok_or(MaskError::NotJson { offset: at })?;
        digits.iter().try_fold(0u32, |acc, &b| {
            let d = (b as char)
                .to_digit(16)
                .ok_or(MaskError::NotJson { offset: at })?;
            Ok(acc << 4 | d)
        })
    }

    /// A string value: masked whole when a pointer reaches it, in spans where regexes match.
    fn string_value(&mut self) -> Result<(), MaskError> {
        let token_start = self.pos;
        let (start, end, escaped) = self.string()?;
        let covered = self.next_covered;
        if covered.is_none() && self.program.regexes.is_empty() {
            return Ok(());
        }
        let src = self.src;
        let raw = src.get(start..end).unwrap_or_default();
        let mut unescaped = std::mem::take(&mut self.unescaped);
        let value: &str = if escaped {
            unescaped.clear();
            if !unescape(raw, &mut unescaped) {
                self.unescaped = unescaped;
                return Err(MaskError::NotJson { offset: start });
            }
            &unescaped
        } else {
            raw
        };
        // The regex edits that may decide this value: those earlier than the pointer that
        // covers it, if any, and whose pattern matches in it.
        let edits = self
            .program
            .candidates(value, covered.unwrap_or(EditId::MAX));
        let mut spans = std::mem::take(&mut self.spans);
        spans.clear();
        match covered {
            Some(c) => {
                // The pointer's span is the whole value and every regex span merges into it:
                // the first regex edit (lowest id) that matches at all decides the strategy.
                let mut id = c;
                for edit in edits {
                    edit.find_spans(value, &mut spans);
                    if !spans.is_empty() {
                        id = edit.id;
                        break;
                    }
                }
                spans.clear();
                spans.push(Span {
                    start: 0,
                    end: value.len(),
                    id,
                });
            }
            None => {
                for edit in edits {
                    edit.find_spans(value, &mut spans);
                }
                merge_spans(&mut spans);
            }
        }
        if !spans.is_empty() {
            self.locate();
            let mut rewritten = std::mem::take(&mut self.rewritten);
            rewritten.clear();
            self.masked +=
                self.program
                    .rewrite(value, &spans, &mut rewritten, self.findings, &self.location);
            self.replace(token_start, &rewritten);
            self.rewritten = rewritten;
        }
        self.spans = spans;
        self.unescaped = unescaped;
        Ok(())
    }

    /// `true`, `false` or `null`; a boolean a pointer reaches becomes its masked text.
    fn literal(&mut self, word: &'static str, maskable: bool) -> Result<(), MaskError> {
        let start = self.pos;
        if self.bytes.get(start..start + word.len()) != Some(word.as_bytes()) {
            return Err(self.not_json());
        }
        self.pos += word.len();
        if maskable {
            self.mask_scalar(start);
        }
        Ok(())
    }

    /// A number (RFC 8259 grammar); one a pointer reaches becomes its masked text.
    fn number(&mut self) -> Result<(), MaskError> {
        let start = self.pos;
        let digits = |m: &mut Self| {
            let from = m.pos;
            while m.bytes.get(m.pos).is_some_and(u8::is_ascii_digit) {
                m.pos += 1;
            }
            m.pos > from
        };
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.not_json()),
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if !digits(self) {
                return Err(self.not_json());
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.not_json());
            }
        }
        self.mask_scalar(start);
        Ok(())
    }

    /// Replace the scalar `start..pos` by the masked string of its text, if a pointer reaches it.
    fn mask_scalar(&mut self, start: usize) {
        let Some(id) = self.next_covered else {
            return;
        };
        let src = self.src;
        let text = src.get(start..self.pos).unwrap_or_default();
        self.locate();
        self.findings.add(self.program, id, &self.location, 1);
        let mut rewritten = std::mem::take(&mut self.rewritten);
        rewritten.clear();
        self.program.write_masked(text, id, &mut rewritten);
        self.masked += 1;
        self.replace(start, &rewritten);
        self.rewritten = rewritten;
    }

    /// Write the JSON pointer of the value being parsed to `location`: array indices, and
    /// member names that a regex edit of the plans matches (data used as a name, such as an
    /// object keyed by e-mail address), are written `*`.
    fn locate(&mut self) {
        self.location.clear();
        let mut name = std::mem::take(&mut self.key);
        let mut spans = std::mem::take(&mut self.spans);
        for frame in &mut self.frames[..self.open] {
            self.location.push('/');
            if !frame.object || frame.key_hidden == Some(true) {
                self.location.push('*');
                continue;
            }
            let (start, end, escaped) = frame.key;
            let raw = self.src.get(start..end).unwrap_or_default();
            name.clear();
            // The name was validated when its member was parsed.
            let name: &str = if escaped && unescape(raw, &mut name) {
                &name
            } else {
                raw
            };
            let hidden = *frame.key_hidden.get_or_insert_with(|| {
                if let Some(&hidden) = self.hidden_names.get(name) {
                    return hidden;
                }
                let hidden = self.program.candidates(name, EditId::MAX).any(|edit| {
                    spans.clear();
                    edit.find_spans(name, &mut spans);
                    !spans.is_empty()
                });
                if self.hidden_names.len() < HIDDEN_NAMES_MAX {
                    self.hidden_names.insert(name.to_owned(), hidden);
                }
                hidden
            });
            if hidden {
                self.location.push('*');
                continue;
            }
            if !name.contains(['~', '/']) {
                self.location.push_str(name);
                continue;
            }
            for c in name.chars() {
                match c {
                    '~' => self.location.push_str("~0"),
                    '/' => self.location.push_str("~1"),
                    c => self.location.push(c),
                }
            }
        }
        self.key = name;
        self.spans = spans;
    }

    /// Replace the input token `start..pos` by the JSON string `value`.
    fn replace(&mut self, start: usize, value: &str) {
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(self.bytes.len() + 64));
        out.extend_from_slice(self.bytes.get(self.copied..start).unwrap_or_default());
        write_json_string(out, value);
        self.copied = self.pos;
    }
}

/// How many bytes at the start of `bytes` need no attention inside a JSON string: up to the
/// first `"`, `\\` or control character (or the end). Eight bytes at a time.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // High bit set in each byte that is zero after xor (= the byte), or below 0x20. The
        // lowest flagged byte is exact (borrows only spill into higher bytes).
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let flags = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
        if flags != 0 {
            return at + (flags.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + chunks
        .remainder()
        .iter()
        .position(|&b| special(b))
        .unwrap_or(chunks.remainder().len())
}

/// Decode the content of a valid JSON string into `out`; false if it is not valid after all.
fn unescape(raw: &str, out: &mut String) -> bool {
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(rest.get(..at).unwrap_or_default());
        let esc = rest.get(at + 1..).unwrap_or_default();
        let mut chars = esc.chars();
        let (c, used) = match chars.next() {
            Some('"') => ('"', 1),
            Some('\\') => ('\\', 1),
            Some('/') => ('/', 1),
            Some('b') => ('\u{8}', 1),
            Some('f') => ('\u{c}', 1),
            Some('n') => ('\n', 1),
            Some('r') => ('\r', 1),
            Some('t') => ('\t', 1),
            Some('u') => {
                let Some(high) = esc.get(1..5).and_then(|h| u32::from_str_radix(h, 16).ok()) else {
                    return false;
                };
                if (0xD800..=0xDBFF).contains(&high) {
                    let Some(low) = esc
                        .get(5..7)
                        .filter(|s| *s == "\\u")
                        .and_then(|_| esc.get(7..11))
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .filter(|l| (0xDC00..=0xDFFF).contains(l))
                    else {
                        return false;
                    };
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    match char::from_u32(code) {
                        Some(c) => (c, 11),
                        None => return false,
                    }
                } else {
                    match char::from_u32(high) {
                        Some(c) => (c, 5),
                        None => return false,
                    }
                }
            }
            _ => return false,
        };
        out.push(c);
        rest = esc.get(used..).unwrap_or_default();
    }
    out.push_str(rest);
    true
}

/// Write `value` as a JSON string: quotes, backslashes and control characters escaped.
fn write_json_string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(from..i).unwrap_or_default());
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        from = i + 1;
    }
    out.extend_from_slice(bytes.get(from..).unwrap_or_default());
    out.push(b'"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plugin::{ByteRange, MaskEdit, RegexTarget};
    use serde_json::{Value, json};

    const KEY: &[u8] = b"operator-hash-key";

    fn redact(label: &str) -> Strategy {
        Strategy::Redact(label.to_owned())
    }

    fn hash(label: &str) -> Strategy {
        Strategy::Hash(label.to_owned())
    }

    fn pointer(p: &str, strategy: Strategy) -> MaskEdit {
        MaskEdit {
            target: MaskTarget::JsonPointer(p.to_owned()),
            strategy,
            kind: "field".to_owned(),
        }
    }

    fn regex(pattern: u32, group: u32, strategy: Strategy) -> MaskEdit {
        checked(pattern, group, Check::None, strategy)
    }

    fn checked(pattern: u32, group: u32, check: Check, strategy: Strategy) -> MaskEdit {
        MaskEdit {
            target: MaskTarget::Regex(RegexTarget {
                pattern,
                group,
                check,
            }),
            strategy,
            kind: format!("pattern-{pattern}"),
        }
    }

    fn range(start: u64, end: u64, strategy: Strategy) -> MaskEdit {
        MaskEdit {
            target: MaskTarget::ByteRange(ByteRange { start, end }),
            strategy,
            kind: "range".to_owned(),
        }
    }

    fn plan(edits: Vec<MaskEdit>) -> MaskPlan {
        MaskPlan {
            edits,
            findings: Vec::new(),
        }
    }

    fn patterns(list: &[&str]) -> Vec<regex::Regex> {
        list.iter().map(|p| regex::Regex::new(p).unwrap()).collect()
    }

    /// Apply plans given as (plan, patterns) pairs, in chain order.
    fn run(
        body: &str,
        kind: BodyKind,
        plans: &[(MaskPlan, Vec<regex::Regex>)],
    ) -> Result<Masked, MaskError> {
        let refs: Vec<PlanRef<'_>> = plans
            .iter()
            .map(|(plan, patterns)| PlanRef { plan, patterns })
            .collect();
        apply(body.as_bytes(), kind, &refs, Some(KEY))
    }

    /// Mask a JSON body with one plan; the output must parse as JSON.
    fn mask_json(body: &str, edits: Vec<MaskEdit>, pats: &[&str]) -> Value {
        let masked = run(body, BodyKind::Json, &[(plan(edits), patterns(pats))]).unwrap();
        serde_json::from_slice(&masked.body).unwrap()
    }

    fn mask_text(body: &str, edits: Vec<MaskEdit>, pats: &[&str]) -> String {
        let masked = run(body, BodyKind::Text, &[(plan(edits), patterns(pats))]).unwrap();
        String::from_utf8(masked.body).unwrap()
    }

    fn hmac16(key: &[u8], value: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())[..16].to_owned()
    }

    #[test]
    fn content_types_map_to_body_kinds() {
        for (ct, want) in [
            ("application/json", Some(BodyKind::Json)),
            ("Application/JSON; charset=utf-8", Some(BodyKind::Json)),
            ("application/problem+json", Some(BodyKind::Json)),
            ("application/vnd.api+json;v=2", Some(BodyKind::Json)),
            ("text/plain", Some(BodyKind::Text)),
            ("text/html; charset=utf-8", Some(BodyKind::Text)),
            ("text/csv", Some(BodyKind::Text)),
            ("application/xml", Some(BodyKind::Text)),
            ("application/atom+xml", Some(BodyKind::Text)),
            ("application/x-www-form-urlencoded", Some(BodyKind::Text)),
            ("application/octet-stream", None),
            ("image/png", None),
            ("application/x-ndjson", None),
            ("multipart/form-data; boundary=x", None),
            ("*/*", None),
            ("json", None),
            ("", None),
        ] {
            assert_eq!(BodyKind::from_content_type(Some(ct)), want, "{ct}");
        }
        assert_eq!(BodyKind::from_content_type(None), None);
    }

    #[test]
    fn redact_writes_the_label_in_brackets() {
        let v = mask_json(
            r#"{"email":"a@b.example"}"#,
            vec![pointer("/email", redact("EMAIL"))],
            &[],
        );
        assert_eq!(v, json!({"email": "[EMAIL]"}));
    }

    #[test]
    fn partial_keeps_the_last_n_characters_not_bytes() {
        let v = mask_json(
            r#"{"card":"4111111111111234","name":"Jürgen Müller"}"#,
            vec![
                pointer("/card", Strategy::Partial(4)),
                pointer("/name", Strategy::Partial(4)),
            ],
            &[],
        );
        assert_eq!(
            v,
            json!({"card": "************1234", "name": "*********ller"})
        );
        let v = mask_json(
            r#"["naïve"]"#,
            vec![pointer("/0", Strategy::Partial(3))],
            &[],
        );
        assert_eq!(v, json!(["**ïve"]));
    }

    #[test]
    fn partial_masks_a_value_no_longer_than_n_entirely() {
        let v = mask_json(
            r#"{"pin":"1234","short":"ab","empty":""}"#,
            vec![pointer("/*", Strategy::Partial(4))],
            &[],
        );
        assert_eq!(v, json!({"pin": "****", "short": "**", "empty": ""}));
        let v = mask_json(
            r#"{"pin":"1234"}"#,
            vec![pointer("/pin", Strategy::Partial(0))],
            &[],
        );
        assert_eq!(v, json!({"pin": "****"}));
    }

    #[test]
    fn hash_is_keyed_hmac_and_stable_across_calls() {
        let body = r#"{"user":"alice@example.com"}"#;
        let first = mask_json(body, vec![pointer("/user", hash("USER"))], &[]);
        let second = mask_json(body, vec![pointer("/user", hash("USER"))], &[]);
        assert_eq!(first, second);
        let want = format!("[USER:{}]", hmac16(KEY, "alice@example.com"));
        assert_eq!(first, json!({ "user": want }));
    }

    #[test]
    fn hash_depends_on_the_key_and_the_value() {
        let edits = plan(vec![pointer("/*", hash("ID"))]);
        let refs = [PlanRef {
            plan: &edits,
            patterns: &[],
        }];
        let body = br#"{"a":"same","b":"same","c":"other"}"#;
        let one = apply(body, BodyKind::Json, &refs, Some(b"key-one")).unwrap();
        let two = apply(body, BodyKind::Json, &refs, Some(b"key-two")).unwrap();
        let one: Value = serde_json::from_slice(&one.body).unwrap();
        let two: Value = serde_json::from_slice(&two.body).unwrap();
        assert_eq!(one["a"], one["b"], "same value, same key: same hash");
        assert_ne!(one["a"], one["c"], "another value: another hash");
        assert_ne!(one["a"], two["a"], "another key: another hash");
    }

    #[test]
    fn hash_without_a_key_fails_closed_even_when_nothing_matches() {
        let edits = plan(vec![pointer("/absent", hash("ID"))]);
        let refs = [PlanRef {
            plan: &edits,
            patterns: &[],
        }];
        for key in [None, Some(&b""[..])] {
            let err = apply(br#"{"a":1}"#, BodyKind::Json, &refs, key).unwrap_err();
            assert!(matches!(err, MaskError::NoHashKey), "{err}");
        }
        // Without hash, no key is needed.
        let edits = plan(vec![pointer("/a", redact("A"))]);
        let refs = [PlanRef {
            plan: &edits,
            patterns: &[],
        }];
        assert!(
            apply(br#"{"a":"x"}"#, BodyKind::Json, &refs, None)
                .unwrap()
                .changed
        );
    }

    #[test]
    fn wildcard_pointer_reaches_every_array_element() {
        let body = r#"{"value":[
            {"name":"sa1","properties":{"primaryKey":"k1","region":"westeurope"}},
            {"name":"sa2","properties":{"primaryKey":"k2"}},
            {"name":"sa3","properties":{}},
            {"name":"sa4"}
        ]}"#;
        let v = mask_json(
            body,
            vec![pointer("/value/*/properties/primaryKey", redact("KEY"))],
            &[],
        );
        assert_eq!(
            v,
            json!({"value": [
                {"name": "sa1", "properties": {"primaryKey": "[KEY]", "region": "westeurope"}},
                {"name": "sa2", "properties": {"primaryKey": "[KEY]"}},
                {"name": "sa3", "properties": {}},
                {"name": "sa4"}
            ]})
        );
    }

    #[test]
    fn wildcard_pointer_reaches_every_object_member() {
        let body = r#"{"keys":{"key1":{"value":"s1","permissions":"FULL"},"key2":{"value":"s2"}},"value":"keep"}"#;
        let v = mask_json(body, vec![pointer("/keys/*/value", redact("SECRET"))], &[]);
        assert_eq!(
            v,
            json!({"keys": {"key1": {"value": "[SECRET]", "permissions": "FULL"},
                            "key2": {"value": "[SECRET]"}},
                   "value": "keep"})
        );
        // The same wildcard over an array of key objects.
        let body = r#"{"keys":[{"keyName":"key1","value":"s1"},{"keyName":"key2","value":"s2"}]}"#;
        let v = mask_json(body, vec![pointer("/keys/*/value", redact("SECRET"))], &[]);
        assert_eq!(
            v,
            json!({"keys": [{"keyName": "key1", "value": "[SECRET]"},
                            {"keyName": "key2", "value": "[SECRET]"}]})
        );
    }

    #[test]
    fn pointer_escapes_name_members_with_slash_and_tilde() {
        let body = r#"{"a/b":"slash","m~n":"tilde","a":{"b":"nested"},"~1":"literal"}"#;
        let v = mask_json(
            body,
            vec![
                pointer("/a~1b", redact("S")),
                pointer("/m~0n", redact("T")),
                pointer("/~01", redact("L")),
            ],
            &[],
        );
        assert_eq!(
            v,
            json!({"a/b": "[S]", "m~n": "[T]", "a": {"b": "nested"}, "~1": "[L]"})
        );
    }

    #[test]
    fn pointer_with_a_bad_escape_or_no_leading_slash_is_refused() {
        for p in ["/a~2b", "/a~", "a/b"] {
            let err = run(
                "{}",
                BodyKind::Json,
                &[(plan(vec![pointer(p, redact("X"))]), vec![])],
            )
            .unwrap_err();
            assert!(
                matches!(err, MaskError::BadPointer { plan: 0, edit: 0 }),
                "{p}: {err}"
            );
        }
    }

    #[test]
    fn pointer_matches_member_names_written_with_escapes() {
        let v = mask_json(
            r#"{"pass\u0077ord":"hunter2"}"#,
            vec![pointer("/password", redact("PW"))],
            &[],
        );
        assert_eq!(v, json!({"password": "[PW]"}));
    }

    #[test]
    fn array_index_pointer_reaches_only_that_element() {
        let body = r#"{"items":["a","b","c"],"obj":{"1":"one","01":"zero-one"}}"#;
        let v = mask_json(
            body,
            vec![
                pointer("/items/1", redact("X")),
                pointer("/items/01", redact("Y")),
                pointer("/items/-", redact("Y")),
                pointer("/obj/1", redact("Z")),
            ],
            &[],
        );
        assert_eq!(
            v,
            json!({"items": ["a", "[X]", "c"], "obj": {"1": "[Z]", "01": "zero-one"}})
        );
    }

    #[test]
    fn pointer_to_a_container_masks_every_member_recursively() {
        let body = r#"{"secret":{"a":"x","n":42,"f":-1.5e3,"t":true,"z":null,"list":["y",{"deep":"w"},[]],"o":{}},"open":"keep"}"#;
        let v = mask_json(body, vec![pointer("/secret", redact("R"))], &[]);
        assert_eq!(
            v,
            json!({"secret": {"a": "[R]", "n": "[R]", "f": "[R]", "t": "[R]", "z": null,
                              "list": ["[R]", {"deep": "[R]"}, []], "o": {}},
                   "open": "keep"})
        );
    }

    #[test]
    fn numbers_and_booleans_become_the_masked_string_of_their_text() {
        let body =
            r#"{"age":42,"big":12345678901234567890123,"ratio":-0.25E+2,"ok":false,"none":null}"#;
        let v = mask_json(body, vec![pointer("/*", Strategy::Partial(2))], &[]);
        assert_eq!(
            v,
            json!({"age": "**", "big": "*********************23", "ratio": "******+2",
                   "ok": "***se", "none": null})
        );
        let v = mask_json(r#"[7]"#, vec![pointer("/0", hash("N"))], &[]);
        assert_eq!(v, json!([format!("[N:{}]", hmac16(KEY, "7"))]));
    }

    #[test]
    fn empty_pointer_masks_the_whole_document() {
        let v = mask_json(
            r#"{"a":"x","b":["y",1]}"#,
            vec![pointer("", redact("ALL"))],
            &[],
        );
        assert_eq!(v, json!({"a": "[ALL]", "b": ["[ALL]", "[ALL]"]}));
        let v = mask_json(r#""top""#, vec![pointer("", redact("ALL"))], &[]);
        assert_eq!(v, json!("[ALL]"));
    }

    #[test]
    fn pointer_matching_nothing_returns_the_body_byte_for_byte() {
        let body = "{ \"a\" : [1, 2.50, \"x\\u00e9\"],\n  \"b\": {\"c\": null} }\n";
        let masked = run(
            body,
            BodyKind::Json,
            &[(
                plan(vec![
                    pointer("/nope/*/x", redact("X")),
                    pointer("/a/9", redact("X")),
                ]),
                vec![],
            )],
        )
        .unwrap();
        assert!(!masked.changed);
        assert_eq!(masked.masked, 0);
        assert_eq!(masked.body, body.as_bytes());
        let empty = run(body, BodyKind::Json, &[]).unwrap();
        assert_eq!(
            (empty.body.as_slice(), empty.changed),
            (body.as_bytes(), false)
        );
    }

    #[test]
    fn bytes_outside_masked_values_are_kept_as_written() {
        let body = "{\n  \"big\": 123456789012345678901234567890,\n  \"f\": 1.10,\n  \"esc\": \"\\u00e9\\/\",\n  \"dup\": \"a\", \"dup\": \"b\",\n  \"s\": \"secret\"\n}";
        let masked = run(
            body,
            BodyKind::Json,
            &[(plan(vec![pointer("/s", redact("S"))]), vec![])],
        )
        .unwrap();
        assert!(masked.changed);
        assert_eq!(
            String::from_utf8(masked.body).unwrap(),
            body.replace("\"secret\"", "\"[S]\"")
        );
    }

    #[test]
    fn duplicate_members_are_all_masked() {
        let masked = run(
            r#"{"pw":"one","pw":"two"}"#,
            BodyKind::Json,
            &[(plan(vec![pointer("/pw", redact("PW"))]), vec![])],
        )
        .unwrap();
        assert_eq!(masked.body, br#"{"pw":"[PW]","pw":"[PW]"}"#);
        assert_eq!(masked.masked, 2);
    }

    #[test]
    fn regex_masks_inside_string_values_and_never_keys() {
        let body = r#"{"alice@example.com":"mail bob@example.com now","n":5,"list":["carol@example.com"]}"#;
        let v = mask_json(
            body,
            vec![regex(0, 0, redact("EMAIL"))],
            &[r"[a-z]+@example\.com"],
        );
        assert_eq!(
            v,
            json!({"alice@example.com": "mail [EMAIL] now", "n": 5, "list": ["[EMAIL]"]})
        );
    }

    #[test]
    fn regex_sees_string_values_unescaped_and_output_is_re_escaped() {
        let body = r#"{"m":"to: bob\u0040example.com\n\"quoted\""}"#;
        let v = mask_json(
            body,
            vec![regex(0, 0, redact("EMAIL"))],
            &[r"[a-z]+@example\.com"],
        );
        assert_eq!(v, json!({"m": "to: [EMAIL]\n\"quoted\""}));
    }

    #[test]
    fn regex_does_not_match_numbers_or_literals() {
        let body = r#"{"a":1234,"b":"1234","c":true}"#;
        let v = mask_json(
            body,
            vec![regex(0, 0, redact("D")), regex(1, 0, redact("T"))],
            &[r"\d+", "true"],
        );
        assert_eq!(v, json!({"a": 1234, "b": "[D]", "c": true}));
    }

    #[test]
    fn capture_group_masks_only_that_group() {
        let body = r#"{"conn":"AccountName=sa1;AccountKey=c2VjcmV0;EndpointSuffix=core"}"#;
        let v = mask_json(
            body,
            vec![regex(0, 1, redact("KEY"))],
            &[r"AccountKey=([^;]+)"],
        );
        assert_eq!(
            v,
            json!({"conn": "AccountName=sa1;AccountKey=[KEY];EndpointSuffix=core"})
        );
        // An optional group that did not take part masks nothing.
        let v = mask_json(
            r#"["id=7","id="]"#,
            vec![regex(0, 1, redact("N"))],
            &[r"id=(\d+)?"],
        );
        assert_eq!(v, json!(["id=[N]", "id="]));
    }

    #[test]
    fn unknown_group_or_pattern_fails_closed() {
        let err = run(
            r#"{}"#,
            BodyKind::Json,
            &[(plan(vec![regex(0, 2, redact("X"))]), patterns(&["a(b)"]))],
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                MaskError::UnknownGroup {
                    group: 2,
                    groups: 2,
                    ..
                }
            ),
            "{err}"
        );
        let err = run(
            r#"{}"#,
            BodyKind::Json,
            &[(plan(vec![regex(1, 0, redact("X"))]), patterns(&["a"]))],
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                MaskError::UnknownPattern {
                    pattern: 1,
                    patterns: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn regex_targets_index_their_own_plugins_patterns() {
        let plans = [
            (plan(vec![regex(0, 0, redact("A"))]), patterns(&["alpha"])),
            (plan(vec![regex(0, 0, redact("B"))]), patterns(&["beta"])),
        ];
        let masked = run(r#"["alpha beta"]"#, BodyKind::Json, &plans).unwrap();
        assert_eq!(masked.body, br#"["[A] [B]"]"#);
    }

    #[test]
    fn overlapping_spans_from_two_plans_merge_under_the_earliest_edit() {
        let plans = [
            (
                plan(vec![regex(0, 0, Strategy::Partial(4))]),
                patterns(&[r"\d{4}-\d{4}"]),
            ),
            (
                plan(vec![regex(0, 0, redact("CARD"))]),
                patterns(&[r"\d{4}-\d{4}-\d{4}"]),
            ),
        ];
        let masked = run(r#"{"c":"card 1111-2222-3333 ok"}"#, BodyKind::Json, &plans).unwrap();
        assert_eq!(masked.body, br#"{"c":"card **********3333 ok"}"#);
        assert_eq!(masked.masked, 1);
        // Chain order decides, not span length: swap the plans and the redaction wins.
        let swapped = [plans[1].clone(), plans[0].clone()];
        let masked = run(
            r#"{"c":"card 1111-2222-3333 ok"}"#,
            BodyKind::Json,
            &swapped,
        )
        .unwrap();
        assert_eq!(masked.body, br#"{"c":"card [CARD] ok"}"#);
    }

    #[test]
    fn overlap_chains_merge_transitively_and_touching_spans_stay_apart() {
        // In "abcdef", [0,2) and [3,5) do not overlap but [1,4) links them: one union [0,5),
        // rewritten by the earliest edit (the first, though its span is not the leftmost).
        // [5,6) only touches the union and keeps its own strategy.
        let v = mask_text(
            "abcdef",
            vec![
                range(3, 5, redact("A")),
                range(0, 2, redact("B")),
                range(1, 4, redact("C")),
                range(5, 6, redact("D")),
            ],
            &[],
        );
        assert_eq!(v, "[A][D]");
    }

    #[test]
    fn pointer_and_regex_on_one_value_use_the_earlier_edit_for_the_whole_value() {
        let body = r#"{"note":"call 555-1234 today","other":"555-9999"}"#;
        let plans = [
            (
                plan(vec![regex(0, 0, redact("PHONE"))]),
                patterns(&[r"\d{3}-\d{4}"]),
            ),
            (plan(vec![pointer("/note", Strategy::Partial(2))]), vec![]),
        ];
        let masked = run(body, BodyKind::Json, &plans).unwrap();
        let v: Value = serde_json::from_slice(&masked.body).unwrap();
        assert_eq!(v, json!({"note": "[PHONE]", "other": "[PHONE]"}));
        let swapped = [plans[1].clone(), plans[0].clone()];
        let masked = run(body, BodyKind::Json, &swapped).unwrap();
        let v: Value = serde_json::from_slice(&masked.body).unwrap();
        assert_eq!(
            v,
            json!({"note": "*****************ay", "other": "[PHONE]"})
        );
    }

    #[test]
    fn text_byte_ranges_mask_those_bytes() {
        let v = mask_text(
            "user=alice; token=abcdef",
            vec![range(18, 24, redact("TOKEN"))],
            &[],
        );
        assert_eq!(v, "user=alice; token=[TOKEN]");
        let v = mask_text(
            "grüße",
            vec![range(2, 4, Strategy::Partial(0)), range(0, 0, redact("E"))],
            &[],
        );
        assert_eq!(v, "gr*ße");
    }

    #[test]
    fn text_byte_range_out_of_bounds_or_reversed_is_refused() {
        for (start, end) in [(0, 6), (6, 7), (3, 2), (u64::MAX, u64::MAX)] {
            let err = run(
                "hello",
                BodyKind::Text,
                &[(plan(vec![range(start, end, redact("X"))]), vec![])],
            )
            .unwrap_err();
            assert!(
                matches!(err, MaskError::BadRange { len: 5, .. }),
                "{start}..{end}: {err}"
            );
        }
    }

    #[test]
    fn text_byte_range_splitting_a_character_is_refused() {
        // "ü" is two bytes at 2..4.
        for (start, end) in [(3, 5), (0, 3)] {
            let err = run(
                "grüße",
                BodyKind::Text,
                &[(plan(vec![range(start, end, redact("X"))]), vec![])],
            )
            .unwrap_err();
            assert!(
                matches!(err, MaskError::BadRange { .. }),
                "{start}..{end}: {err}"
            );
        }
    }

    #[test]
    fn text_regex_masks_anywhere_in_the_text() {
        let v = mask_text(
            "<user email=\"a@x.io\">b@y.io</user>",
            vec![regex(0, 0, redact("EMAIL"))],
            &[r"[a-z]@[a-z]\.io"],
        );
        assert_eq!(v, "<user email=\"[EMAIL]\">[EMAIL]</user>");
    }

    #[test]
    fn byte_range_on_json_and_pointer_on_text_are_refused() {
        let err = run(
            r#"{}"#,
            BodyKind::Json,
            &[(plan(vec![range(0, 1, redact("X"))]), vec![])],
        )
        .unwrap_err();
        assert!(
            matches!(err, MaskError::ByteRangeOnJson { plan: 0 }),
            "{err}"
        );
        let err = run(
            "text",
            BodyKind::Text,
            &[(plan(vec![pointer("/a", redact("X"))]), vec![])],
        )
        .unwrap_err();
        assert!(matches!(err, MaskError::PointerOnText { plan: 0 }), "{err}");
    }

    #[test]
    fn invalid_json_is_refused() {
        for body in [
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "[01]",
            "[1.]",
            "[.5]",
            "[-]",
            "[1e]",
            "[+1]",
            "[tru]",
            "[nul]",
            "\"abc",
            "\"a\\x\"",
            "\"\\u12G4\"",
            "\"a\tb\"",
            "{\"a\":1}{}",
            "[1] x",
            "\u{feff}[]",
            "'a'",
            "[\"\\ud800\"]",
            "[\"\\udc00\"]",
            "[\"\\ud800\\u0041\"]",
            "NaN",
            "[Infinity]",
        ] {
            let err = run(body, BodyKind::Json, &[]).unwrap_err();
            assert!(matches!(err, MaskError::NotJson { .. }), "{body:?}: {err}");
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(run(&deep(MAX_DEPTH), BodyKind::Json, &[]).is_ok());
        let err = run(&deep(MAX_DEPTH + 1), BodyKind::Json, &[]).unwrap_err();
        assert!(
            matches!(err, MaskError::TooDeep { limit: MAX_DEPTH }),
            "{err}"
        );
    }

    #[test]
    fn non_utf8_bodies_are_refused() {
        let body = b"caf\xe9 au lait";
        let err = apply(body, BodyKind::Text, &[], None).unwrap_err();
        assert!(matches!(err, MaskError::NotUtf8 { offset: 3 }), "{err}");
        let err = apply(b"[\"caf\xe9\"]", BodyKind::Json, &[], None).unwrap_err();
        assert!(matches!(err, MaskError::NotJson { .. }), "{err}");
    }

    #[test]
    fn validation_agrees_with_serde_json() {
        let seeds = [
            r#"{"a":[1,-2.5e-3,true,false,null,"x\"y\\z\u00e9\ud83d\ude00"],"b":{"c":{}},"d":[]}"#,
            r#"[{"id":"1","tags":["a","b"],"n":0},{"id":"2","nested":[[[]]]}]"#,
            "  {\"k\" : \"v\" ,\n\"e\":\"\\/\\b\\f\\n\\r\\t\"}  ",
            r#""just a string""#,
            "-0.0E+0",
        ];
        let noise = b"{}[]\",:\\ 0123456789-+.eEtrufalsn\x01a";
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut checked = 0;
        for doc in seeds {
            for _ in 0..2000 {
                let mut bytes = doc.as_bytes().to_vec();
                for _ in 0..1 + next(3) {
                    let at = next(bytes.len() + 1);
                    match next(3) {
                        0 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        1 if at < bytes.len() => bytes[at] = noise[next(noise.len())],
                        _ => bytes.insert(at, noise[next(noise.len())]),
                    }
                }
                let theirs = serde_json::from_slice::<Value>(&bytes);
                if theirs
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("out of range"))
                {
                    continue; // serde_json refuses numbers beyond f64; JSON does not.
                }
                let ours = apply(&bytes, BodyKind::Json, &[], None);
                assert_eq!(
                    ours.is_ok(),
                    theirs.is_ok(),
                    "{:?}: ours {:?}, serde_json {:?}",
                    String::from_utf8_lossy(&bytes),
                    ours.err(),
                    theirs.err()
                );
                checked += 1;
            }
        }
        assert!(checked > 9000, "{checked}");
    }

    #[test]
    fn masked_output_always_reparses_as_json() {
        let body = r#"{"a":"x","b":["\u0000\"\\", 3, true, {"c":"é😀"}],"d":"q\"uote"}"#;
        for label in [
            "PLAIN",
            "qu\"ote",
            "back\\slash",
            "new\nline",
            "ctl\u{1}",
            "ünï😀",
        ] {
            for strategy in [redact(label), hash(label), Strategy::Partial(1)] {
                let masked = run(
                    body,
                    BodyKind::Json,
                    &[(
                        plan(vec![pointer("", strategy.clone()), regex(0, 0, strategy)]),
                        patterns(&["."]),
                    )],
                )
                .unwrap();
                assert!(masked.changed);
                let v: Value = serde_json::from_slice(&masked.body).unwrap();
                assert_eq!(v["b"][1].as_str().map(str::is_empty), Some(false));
                if label == "qu\"ote" && matches!(v["a"].as_str(), Some(s) if s.starts_with('[')) {
                    assert!(v["a"].as_str().unwrap().contains("qu\"ote"));
                }
            }
        }
    }

    #[test]
    fn masked_counts_every_value_and_span_rewritten() {
        let masked = run(
            r#"{"a":"x@y.z and p@q.r","b":"s","c":7,"d":"none"}"#,
            BodyKind::Json,
            &[(
                plan(vec![
                    pointer("/b", redact("B")),
                    pointer("/c", redact("C")),
                    regex(0, 0, redact("E")),
                ]),
                patterns(&[r"\w@\w\.\w"]),
            )],
        )
        .unwrap();
        assert_eq!(masked.masked, 4);
        assert!(masked.changed);
    }

    #[test]
    fn errors_carry_no_body_content() {
        let secret = "hunter2-secret";
        let cases = [
            run(&format!("{{\"pw\":\"{secret}\""), BodyKind::Json, &[]).unwrap_err(),
            run(
                &format!("{secret}ü"),
                BodyKind::Text,
                &[(plan(vec![range(0, 15, redact("X"))]), vec![])],
            )
            .unwrap_err(),
        ];
        for err in cases {
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn plain_run_stops_at_the_first_quote_backslash_or_control_byte() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        let alphabet = [
            b'a',
            b'"',
            b'\\',
            0x00,
            0x1f,
            0x20,
            0x7f,
            0x80,
            0xff,
            0x5c ^ 0x80,
            0xa2,
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..40 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Mostly plain bytes, so specials land anywhere in a word.
                        if seed.is_multiple_of(5) {
                            alphabet[(seed / 5 % alphabet.len() as u64) as usize]
                        } else {
                            b'a' + (seed % 26) as u8
                        }
                    })
                    .collect();
                assert_eq!(plain_run(&bytes), naive(&bytes), "{bytes:?}");
            }
        }
    }

    #[test]
    fn the_union_reports_exactly_the_patterns_that_match() {
        let edits = |compiled: &'static [regex::Regex]| -> Vec<RegexEdit<'static>> {
            (compiled.iter().enumerate())
                .map(|(i, re)| RegexEdit {
                    id: i as EditId,
                    re,
                    group: 0,
                    check: Check::None,
                })
                .collect()
        };
        let compiled = patterns(&[
            "(?x) a b # a comment that must not swallow the next pattern",
            r"(?i)key(?-i)=\d",
            r"\Ax",
            r"y$",
            r"(?:^|[^A-Za-z])(z{3})\b",
        ])
        .leak();
        let union = union_of(&edits(compiled)).expect("the union compiles");
        for text in [
            "",
            "ab",
            "a b",
            "xa",
            "ax",
            "KEY=1",
            "key=x",
            "Key=9",
            "xy",
            "yx",
            "zzz",
            "azzz",
            " zzz.",
            "zzzz",
            "# a comment",
            "\\Ax",
            "ab KEY=1 zzz",
        ] {
            let each: Vec<usize> = (compiled.iter().enumerate())
                .filter(|(_, re)| re.is_match(text))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(union.is_match(text), !each.is_empty(), "{text:?}");
            assert_eq!(
                union.matches(text).into_iter().collect::<Vec<_>>(),
                each,
                "{text:?}"
            );
        }
        assert!(union_of(&[]).is_none());
        // A union too large to compile is no union: every value is then searched.
        let huge = patterns(&[r"\w{200}", r"\w{199}"]).leak();
        assert!(union_of(&edits(huge)).is_none());
    }

    /// A random JSON document whose strings mix plain text, escapes and non-ASCII.
    fn random_document(next: &mut impl FnMut(usize) -> usize, depth: usize) -> Value {
        let pieces = [
            "a", "b", "x", "y", "ab", " ", "@", "7", "\"", "\\", "\n", "é", "ü@x", "--",
        ];
        let string = |next: &mut dyn FnMut(usize) -> usize| {
            (0..next(6))
                .map(|_| pieces[next(pieces.len())])
                .collect::<String>()
        };
        match if depth > 3 { next(3) } else { next(5) } {
            0 => Value::String(string(next)),
            1 => json!(next(1000)),
            2 => json!(next(2) == 0),
            3 => Value::Array(
                (0..next(4))
                    .map(|_| random_document(next, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..next(4))
                    .map(|i| {
                        (
                            format!("{}{i}", string(next)),
                            random_document(next, depth + 1),
                        )
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn union_filtered_regex_masking_equals_searching_every_string() {
        let pats = [
            "a",
            "a*",
            "a*?",
            "^a",
            "a$",
            r"\ba\w*",
            ".+",
            r#"[^"]+"#,
            r#"""#,
            r"\w+@\w+",
            "(?m)^x",
            "x|xy",
            r"\d+",
            "é+",
            r"\B.",
            r#"a"\s*:"#,
            r"\\",
            "\n",
            r"[\]a]",
            "(?x) a b # a comment, then the union's next pattern",
            "(?i)A(?-i)b",
            r"\Ax|y\z",
            r"(?:^|[^a])(b+)$",
        ];
        let compiled = patterns(&pats);
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n.max(1) as u64) as usize
        };
        let mut rewrites = 0;
        for round in 0..1500 {
            let doc = Value::Array(
                (0..4 + next(8))
                    .map(|_| random_document(&mut next, 1))
                    .collect(),
            );
            let body = if round % 2 == 0 {
                serde_json::to_string(&doc).unwrap()
            } else {
                serde_json::to_string_pretty(&doc).unwrap()
            };
            // Two or three patterns, in two plans.
            let picks: Vec<u32> = (0..2 + next(2)).map(|_| next(pats.len()) as u32).collect();
            let (first, second) = picks.split_at(1);
            let edit = |(i, &p): (usize, &u32)| regex(p, 0, redact(&format!("E{i}")));
            let plans = [
                (
                    plan(first.iter().enumerate().map(edit).collect()),
                    compiled.clone(),
                ),
                (
                    plan(
                        second
                            .iter()
                            .enumerate()
                            .map(|(i, p)| edit((i + 1, p)))
                            .collect(),
                    ),
                    compiled.clone(),
                ),
            ];
            let masked = run(&body, BodyKind::Json, &plans).unwrap();
            let ours: Value = serde_json::from_slice(&masked.body).unwrap();

            // The reference: every string value searched on its own.
            let refs: Vec<PlanRef<'_>> = plans
                .iter()
                .map(|(plan, patterns)| PlanRef { plan, patterns })
                .collect();
            let program = Program::compile(BodyKind::Json, &refs, None).unwrap();
            let mut want = doc.clone();
            let mut stack = vec![&mut want];
            while let Some(v) = stack.pop() {
                match v {
                    Value::String(s) => {
                        let mut spans = Vec::new();
                        for edit in &program.regexes {
                            edit.find_spans(s, &mut spans);
                        }
                        merge_spans(&mut spans);
                        if !spans.is_empty() {
                            let mut out = String::new();
                            program.rewrite(s, &spans, &mut out, &mut Findings::default(), "");
                            *s = out;
                            rewrites += 1;
                        }
                    }
                    Value::Array(items) => stack.extend(items.iter_mut()),
                    Value::Object(members) => stack.extend(members.values_mut()),
                    _ => {}
                }
            }
            assert_eq!(ours, want, "body {body} patterns {picks:?}");
        }
        assert!(rewrites > 2000, "{rewrites}");
    }

    #[test]
    fn luhn_accepts_card_numbers_and_refuses_look_alikes() {
        for good in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "378282246310005",
            "6011000990139424",
            "5555555555554444",
        ] {
            assert!(luhn(good), "{good}");
        }
        for bad in [
            "4111111111111112",     // checksum off by one
            "1234567812345678",     // 16 digits, Luhn-invalid
            "00000000000",          // 11 digits: too short even though the sum is 0
            "00000000000000000000", // 20 digits
            "4111  1111 1111 1111", // two separators
            "-4111111111111111",
            "4111111111111111 ",
            "4111.1111.1111.1111",
            "",
        ] {
            assert!(!luhn(bad), "{bad}");
        }
    }

    #[test]
    fn iban_checks_mod_97() {
        for good in [
            "GB82WEST12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            "DE89370400440532013000",
            "FR1420041010050500013M02606",
            "gb82west12345698765432",
        ] {
            assert!(iban(good), "{good}");
        }
        for bad in [
            "GB82WEST12345698765433",
            "GB00WEST12345698765432",
            "1282WEST12345698765432",
            "GB8XWEST12345698765432",
            "GB82WEST1234",
            "GB82-WEST-1234-5698-7654-32",
        ] {
            assert!(!iban(bad), "{bad}");
        }
    }

    #[test]
    fn entropy_separates_secrets_from_ids() {
        assert!(entropy("aaaaaaaa") < 0.01);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
        // A UUID and a hex digest stay at or under 4 bits per character; a random base64
        // secret is well above.
        assert!(entropy("0b1f64711bf04ddaaec3cb9272f09590") <= 4.0);
        assert!(entropy("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08") <= 4.0);
        assert!(entropy("Zm9vYmFyQmF6UXV4K3Nv/MeWk1pZ2h0QmVTZWNyZXQ") > 4.3);
    }

    #[test]
    fn checks_keep_look_alikes_readable() {
        let pats = [
            r"\b\d(?:[ -]?\d){11,18}\b",
            r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}",
            r"[A-Za-z0-9+/]{32,}",
        ];
        let edits = vec![
            checked(0, 0, Check::Luhn, redact("CARD")),
            checked(1, 0, Check::Iban, redact("IBAN")),
            checked(2, 0, Check::MinEntropy(4.3), redact("SECRET")),
        ];
        let body = json!({
            "card": "paid with 4111 1111 1111 1111 today",
            "order": "order 1234567812345678",
            "iban": "to GB82WEST12345698765432",
            "not_iban": "ref GB82WEST12345698765433",
            "secret": "Zm9vYmFyQmF6UXV4K3Nv/MeWk1pZ2h0QmVTZWNyZXQ",
            "digest": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        });
        let out = mask_json(&body.to_string(), edits, &pats);
        assert_eq!(
            out,
            json!({
                "card": "paid with [CARD] today",
                "order": "order 1234567812345678",
                "iban": "to [IBAN]",
                "not_iban": "ref GB82WEST12345698765433",
                "secret": "[SECRET]",
                "digest": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            })
        );
    }

    #[test]
    fn findings_count_kinds_by_location_without_values() {
        let pats = [r"[a-z]+@example\.com"];
        let mut email = regex(0, 0, redact("EMAIL"));
        email.kind = "email".into();
        let mut key = pointer("/value/*/key", redact("KEY"));
        key.kind = "storage-key".into();
        let body = r#"{"value":[{"key":"k1","owner":"ann@example.com"},
            {"key":"k2","owner":"bob@example.com","tags":{"a/b~c":"cy@example.com"}},
            {"x":1}],
            "byMail":{"dan@example.com":{"note":"eve@example.com"}}}"#;
        let masked = run(
            body,
            BodyKind::Json,
            &[(plan(vec![email, key]), patterns(&pats))],
        )
        .unwrap();
        let got: Vec<(String, String, u32)> = masked
            .findings
            .iter()
            .map(|f| (f.kind.clone(), f.location.clone(), f.count))
            .collect();
        assert_eq!(
            got,
            vec![
                // A member name a detector matches is written `*`.
                ("email".into(), "/byMail/*/note".into(), 1),
                ("email".into(), "/value/*/owner".into(), 2),
                ("email".into(), "/value/*/tags/a~1b~0c".into(), 1),
                ("storage-key".into(), "/value/*/key".into(), 2),
            ]
        );
        assert_eq!(masked.masked, 6);
        let line = summarize(&masked.findings);
        assert!(!line.contains("example.com"), "{line}");
        assert!(!line.contains("k1"), "{line}");

        let text = run(
            "ann@example.com and bob@example.com",
            BodyKind::Text,
            &[(plan(vec![regex(0, 0, redact("EMAIL"))]), patterns(&pats))],
        )
        .unwrap();
        assert_eq!(text.findings.len(), 1);
        assert_eq!(
            (
                text.findings[0].kind.as_str(),
                text.findings[0].location.as_str(),
                text.findings[0].count
            ),
            ("pattern-0", "body", 2)
        );
    }

    #[test]
    fn findings_are_bounded() {
        let pats = [r"s\d+"];
        let members: Vec<String> = (0..FINDINGS_MAX + 10)
            .map(|i| format!("\"m{i}\":\"s{i}\""))
            .collect();
        let body = format!("{{{}}}", members.join(","));
        let masked = run(
            &body,
            BodyKind::Json,
            &[(plan(vec![regex(0, 0, redact("S"))]), patterns(&pats))],
        )
        .unwrap();
        assert_eq!(masked.findings.len(), FINDINGS_MAX + 1);
        let more = masked
            .findings
            .iter()
            .find(|f| f.location == "(more)")
            .unwrap();
        assert_eq!(more.count, 10);
        let total: u32 = masked.findings.iter().map(|f| f.count).sum();
        assert_eq!(total as usize, FINDINGS_MAX + 10);
    }

    #[test]
    fn a_masked_whole_range_is_rewritten_and_a_part_refused() {
        assert_eq!(masked_range("bytes 0-99/100", 90).unwrap(), "bytes 0-89/90");
        for part in [
            "bytes 0-99/200",
            "bytes 10-99/100",
            "bytes 0-99/*",
            "bytes */100",
            "items 0-1/2",
            "",
        ] {
            assert!(
                matches!(masked_range(part, 90), Err(MaskError::PartialContent)),
                "{part}"
            );
        }
        assert!(masked_range("bytes 0-99/100", 0).is_err());
    }
}
