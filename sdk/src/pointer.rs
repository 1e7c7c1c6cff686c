//! Building and splitting JSON pointers (RFC 6901) for mask plans, with `*` wildcard segments.

/// The wildcard segment: matches every member of an object or element of an array.
pub const ANY: &str = "*";

/// Escape one reference token: `~` becomes `~0`, `/` becomes `~1`.
///
/// A literal member named `*` cannot be addressed: `*` is always the wildcard.
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Build a pointer from segments, escaping each; `ANY` stays a wildcard.
///
/// ```
/// use portcullis_sdk::pointer::{build, ANY};
/// assert_eq!(build(["value", ANY, "properties", "primaryKey"]), "/value/*/properties/primaryKey");
/// assert_eq!(build(["a/b", "m~n"]), "/a~1b/m~0n");
/// assert_eq!(build::<[&str; 0], &str>([]), "");
/// ```
pub fn build<I, S>(segments: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for segment in segments {
        out.push('/');
        out.push_str(&escape(segment.as_ref()));
    }
    out
}

/// Split a pointer into unescaped segments; `None` if it is not a valid pointer
/// (non-empty and not starting with `/`, or a `~` not followed by `0` or `1`).
///
/// ```
/// use portcullis_sdk::pointer::split;
/// assert_eq!(split("/a~1b/m~0n/*").unwrap(), vec!["a/b", "m~n", "*"]);
/// assert_eq!(split("").unwrap(), Vec::<String>::new());
/// assert!(split("no-slash").is_none());
/// assert!(split("/bad~2").is_none());
/// ```
pub fn split(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/').map(unescape).collect()
}

fn unescape(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_split_round_trips_awkward_names() {
        let segments = ["~", "/", "~1", "a/b~c", ""];
        let pointer = build(segments);
        assert_eq!(pointer, "/~0/~1/~01/a~1b~0c/");
        assert_eq!(split(&pointer).unwrap(), segments);
    }
}
