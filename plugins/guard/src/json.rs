//! JSON helpers: a parser that refuses ambiguous documents, pointer resolution with `*`
//! wildcards, and value comparison.
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parse JSON text, refusing an object with the same member name twice — also when the two
/// names differ only in case. Parsers disagree on which duplicate wins (and case-insensitive
/// ones such as ARM's bind either), so a guard reading one value while the upstream acts on the
/// other would be a bypass; such a document counts as invalid.
pub fn parse_unambiguous(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Unambiguous>(text).map(|u| u.0)
}

struct Unambiguous(Value);

impl<'de> Deserialize<'de> for Unambiguous {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UnambiguousVisitor)
            .map(Unambiguous)
    }
}

struct UnambiguousVisitor;

impl<'de> Visitor<'de> for UnambiguousVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Unambiguous::deserialize(deserializer).map(|u| u.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unambiguous(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        let mut seen = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if !seen.insert(name.to_lowercase()) {
                return Err(de::Error::custom(format!(
                    "member {name:?} appears twice (names are compared ignoring case)"
                )));
            }
            let Unambiguous(value) = map.next_value()?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

/// Every value `segments` (an unescaped JSON pointer) leads to. A `*` segment stands for every
/// member of an object or element of an array; with `ignore_case`, object member names are
/// compared ignoring ASCII case.
pub fn resolve<'v>(value: &'v Value, segments: &[String], ignore_case: bool) -> Vec<&'v Value> {
    let mut found = Vec::new();
    collect(value, segments, ignore_case, &mut found);
    found
}

fn collect<'v>(value: &'v Value, segments: &[String], ignore_case: bool, out: &mut Vec<&'v Value>) {
    let Some((first, rest)) = segments.split_first() else {
        out.push(value);
        return;
    };
    match value {
        Value::Object(members) if first == portcullis_sdk::pointer::ANY => {
            for member in members.values() {
                collect(member, rest, ignore_case, out);
            }
        }
        Value::Object(members) if ignore_case => {
            for (name, member) in members {
                if name.eq_ignore_ascii_case(first) {
                    collect(member, rest, ignore_case, out);
                }
            }
        }
        Value::Object(members) => {
            if let Some(member) = members.get(first) {
                collect(member, rest, ignore_case, out);
            }
        }
        Value::Array(items) if first == portcullis_sdk::pointer::ANY => {
            for item in items {
                collect(item, rest, ignore_case, out);
            }
        }
        Value::Array(items) => {
            if let Some(item) = array_index(first).and_then(|i| items.get(i)) {
                collect(item, rest, ignore_case, out);
            }
        }
        _ => {}
    }
}

/// An RFC 6901 array index: `0`, or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// JSON equality. Numbers compare by value (`1` equals `1.0`); with `ignore_case`, strings
/// (also inside arrays and objects) compare ignoring ASCII case. Member names compare exactly.
pub fn equal(a: &Value, b: &Value, ignore_case: bool) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::String(x), Value::String(y)) => {
            if ignore_case {
                x.eq_ignore_ascii_case(y)
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| equal(x, y, ignore_case))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w, ignore_case)))
        }
        _ => false,
    }
}

fn numbers_equal(x: &Number, y: &Number) -> bool {
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
        return x == y;
    }
    matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
}
