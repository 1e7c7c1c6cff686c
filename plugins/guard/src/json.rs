//! JSON helpers: pointer resolution with `*` wildcards and value comparison (the parser that
//! refuses ambiguous documents is the SDK's).
use serde_json::{Number, Value};

pub use portcullis_sdk::json::parse_unambiguous;

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
