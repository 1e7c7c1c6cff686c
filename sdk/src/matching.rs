//! Matching request paths against templates (`/subscriptions/{sub}/resourceGroups/{rg}/**`)
//! and names against globs (`Microsoft.Compute/*/delete`).

/// Match `path` (its query string, if any, is ignored) against a path template and return the
/// captured `{name}` segments, or `None` when it does not match.
///
/// Template segments: a literal (compared exactly), `{name}` (any one non-empty segment,
/// captured), `*` (any one non-empty segment), and a final `**` (zero or more segments).
///
/// ```
/// use portcullis_sdk::matching::path_template;
/// let caps = path_template("/subscriptions/{sub}/resourceGroups/{rg}/**",
///     "/subscriptions/s1/resourceGroups/rg-prod/providers/x?api-version=1").unwrap();
/// assert_eq!(caps, vec![("sub".to_string(), "s1".to_string()), ("rg".to_string(), "rg-prod".to_string())]);
/// assert!(path_template("/a/{b}", "/a/").is_none());
/// assert!(path_template("/a/*", "/a/b/c").is_none());
/// ```
pub fn path_template(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let mut wanted = segments(template).peekable();
    let mut got = segments(path);
    let mut captures = Vec::new();
    while let Some(t) = wanted.next() {
        if t == "**" && wanted.peek().is_none() {
            return Some(captures);
        }
        let segment = got.next()?;
        if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            if segment.is_empty() {
                return None;
            }
            captures.push((name.to_string(), segment.to_string()));
        } else if t == "*" {
            if segment.is_empty() {
                return None;
            }
        } else if t != segment {
            return None;
        }
    }
    got.next().is_none().then_some(captures)
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

/// Glob match: `*` matches any run of characters (including none and `/`), `?` exactly one
/// character; everything else matches itself.
///
/// ```
/// use portcullis_sdk::matching::glob;
/// assert!(glob("Microsoft.Compute/*/delete", "Microsoft.Compute/virtualMachines/delete"));
/// assert!(glob("*Container", "DeleteContainer"));
/// assert!(!glob("Get?", "GetBlob"));
/// ```
pub fn glob(pattern: &str, text: &str) -> bool {
    glob_by(pattern, text, |a, b| a == b)
}

/// [`glob`], comparing ASCII letters case-insensitively (Azure resource paths are).
pub fn glob_ignore_case(pattern: &str, text: &str) -> bool {
    glob_by(pattern, text, |a, b| a.eq_ignore_ascii_case(&b))
}

fn glob_by(pattern: &str, text: &str, eq: impl Fn(char, char) -> bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with single backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_template_requires_every_segment() {
        assert!(path_template("/a/b", "/a/b").is_some());
        assert!(path_template("/a/b", "/a/b/c").is_none());
        assert!(path_template("/a/b/c", "/a/b").is_none());
        assert!(path_template("/a/**", "/a").is_some());
        assert!(path_template("/a/**", "/b/c").is_none());
        assert!(path_template("/A/b", "/a/b").is_none());
    }

    #[test]
    fn glob_handles_stars_anywhere() {
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("**x", "yyx"));
        assert!(!glob("abc", "abcd"));
        assert!(glob_ignore_case(
            "microsoft.storage/*",
            "Microsoft.Storage/storageAccounts"
        ));
        assert!(!glob(
            "microsoft.storage/*",
            "Microsoft.Storage/storageAccounts"
        ));
    }
}
