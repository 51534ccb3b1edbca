//! Request paths normalised once, before routing, so that the path the router matches, the
//! path the policies judge and the path the upstream receives are the same path.
//!
//! Without this, `/pub/../priv/x` matches a route for `/pub` (no authentication) and an upstream
//! that resolves dot-segments itself serves `/priv/x`, which needed a key: the proxy must decide
//! on the path the upstream will act on. The rule, applied to every request (proxied routes, the
//! AI gateway's API and prompt APIs alike), is the one nginx applies before `location` matching:
//!
//! 1. percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are
//!    decoded (`%2e` is `.`, `%7E` is `~`); other escapes are kept, with upper-case hex digits
//!    (§6.2.2.1);
//! 2. runs of `/` are merged into one;
//! 3. `.` segments are removed and `..` segments remove the segment before them (§5.2.4);
//!    a path that ends in `.` or `..` keeps a trailing `/`;
//! 4. the query is left exactly as sent.
//!
//! A path that cannot be normalised safely is refused with 400 `bad_path`: an escape that is not
//! `%` and two hex digits, an encoded `/` or `\` (`%2F`, `%5C`: a separator hidden inside a
//! segment, which upstreams disagree about), a raw `\` (a separator on some servers), an encoded
//! NUL, and a `..` that would climb above the root.
//!
//! The proxy applies the rule to each request; route and prompt API paths must already be in
//! this form, or they could never match.
//!
//! The common path — no `%`, no `\`, no `//`, no segment starting with `.` — is recognised in
//! one pass over its bytes and left untouched without allocating.

/// Why a path was refused; the message is shown to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("the path has a malformed percent-escape; a % must be followed by two hex digits")]
    BadEscape,
    /// `%2F`, `%5C` or a raw `\`.
    #[error(
        "the path hides a separator inside a segment (%2F, %5C or \\); send / unencoded, or encode the segment differently"
    )]
    EncodedSeparator,
    /// `%00`.
    #[error("the path contains an encoded NUL byte (%00)")]
    Nul,
    /// More `..` segments than segments before them.
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
}

/// The normalised form of `path` when it differs from `path`, `None` when it is already
/// normal. Paths that do not start with `/` (`*` of `OPTIONS *`, the authority of `CONNECT`)
/// are left alone.
pub fn normalize(path: &str) -> Result<Option<String>, PathError> {
    if !path.starts_with('/') || is_plain(path.as_bytes()) {
        return Ok(None);
    }
    let decoded = decode(path.as_bytes())?;
    let normal = remove_dot_segments(&decoded)?;
    Ok((normal != path).then_some(normal))
}

/// [`CLASS`] bits: a byte that always needs a look (`%` or a backslash), a `/`, a `.`.
const ESCAPE: u8 = 1;
const SLASH: u8 = 2;
const DOT: u8 = 4;

/// The class of each byte, for [`is_plain`].
static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    class[b'%' as usize] = ESCAPE;
    class[b'\\' as usize] = ESCAPE;
    class[b'/' as usize] = SLASH;
    class[b'.' as usize] = DOT;
    class
};

/// Whether nothing in `path` needs normalising: the one pass every request pays, a table
/// lookup and a few bit operations per byte, without a branch.
fn is_plain(path: &[u8]) -> bool {
    let mut work = 0u8;
    let mut previous = 0u8;
    for &b in path {
        let class = CLASS[usize::from(b)];
        // An escape anywhere; a `/` or `.` right after a `/`.
        let after_slash = (previous & SLASH) >> 1;
        let slash_or_dot = u8::from(class & (SLASH | DOT) != 0);
        work |= (class & ESCAPE) | (after_slash & slash_or_dot);
        previous = class;
    }
    work == 0
}

fn hex_value(digit: Option<&u8>) -> Option<u8> {
    match digit? {
        d @ b'0'..=b'9' => Some(d - b'0'),
        d @ b'a'..=b'f' => Some(d - b'a' + 10),
        d @ b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Step 1: unreserved escapes decoded, the others kept with upper-case digits.
fn decode(path: &[u8]) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' => {
                let high = hex_value(path.get(i + 1)).ok_or(PathError::BadEscape)?;
                let low = hex_value(path.get(i + 2)).ok_or(PathError::BadEscape)?;
                let value = high << 4 | low;
                match value {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    v if is_unreserved(v) => out.push(v),
                    _ => out.extend_from_slice(&[
                        b'%',
                        HEX[usize::from(high)],
                        HEX[usize::from(low)],
                    ]),
                }
                i += 3;
            }
            b'\\' => return Err(PathError::EncodedSeparator),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII was put in place of ASCII escapes, so what was UTF-8 still is.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

/// Steps 2 and 3 on a decoded path that starts with `/`.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    let segments = path[1..].split('/');
    for segment in segments {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                kept.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = true;
            }
            _ => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if kept.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> Result<String, PathError> {
        normalize(path).map(|p| p.unwrap_or_else(|| path.to_string()))
    }

    #[test]
    fn plain_paths_are_left_alone_without_allocating() {
        for path in ["/", "/a", "/a/b/", "/a.b/c..d/e.", "/~user", "*", ""] {
            assert_eq!(normalize(path), Ok(None), "{path}");
        }
    }

    #[test]
    fn dot_segments_slashes_and_unreserved_escapes_are_normalised() {
        for (raw, normal) in [
            ("/pub/../priv/x", "/priv/x"),
            ("/pub/%2e%2e/priv/x", "/priv/x"),
            ("/pub/%2E%2e/priv/x", "/priv/x"),
            ("/pub/.%2e/priv/x", "/priv/x"),
            ("/a/./b/../c", "/a/c"),
            ("//a///b//", "/a/b/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/.", "/"),
            ("//", "/"),
            ("/%7euser/%41%62", "/~user/Ab"),
            ("/sp%20ace/%3f%c3%a9", "/sp%20ace/%3F%C3%A9"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/..b/.c", "/a/..b/.c"),
            ("/%252e%252e/x", "/%252e%252e/x"),
        ] {
            assert_eq!(n(raw), Ok(normal.to_string()), "{raw}");
            // Normalising is idempotent.
            assert_eq!(n(normal), Ok(normal.to_string()), "{normal}");
        }
        assert_eq!(normalize("/.well-known/x"), Ok(None));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for (raw, error) in [
            ("/a/..%2fb", PathError::EncodedSeparator),
            ("/a/..%2Fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::EncodedSeparator),
            ("/a/%00", PathError::Nul),
            ("/a/%zz", PathError::BadEscape),
            ("/a/%2", PathError::BadEscape),
            ("/a/%", PathError::BadEscape),
            ("/..", PathError::AboveRoot),
            ("/a/../../b", PathError::AboveRoot),
            ("/%2e%2e/etc", PathError::AboveRoot),
        ] {
            assert_eq!(normalize(raw), Err(error), "{raw}");
        }
    }
}
