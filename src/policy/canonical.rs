//! Rule 2: the request path must be canonical. A path that a store (or a
//! framework in front of it) might normalise differently from us is refused
//! outright, so that the path we matched a route and an owner against is the
//! path the store serves: no `.`/`..` or empty segments, no backslashes, no
//! percent-encoded `/` `\` `.` or control characters, no malformed escapes.

/// Whether `path` (without query string) is canonical. The root `/` is.
pub fn is_canonical(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    rest.split('/').all(segment_ok) && bytes_ok(path.as_bytes())
}

/// A segment is neither empty nor a dot segment.
fn segment_ok(seg: &str) -> bool {
    !seg.is_empty() && seg != "." && seg != ".."
}

/// No backslash, no raw control character, and every `%` starts a well-formed
/// escape of a byte that does not change the path's meaning once decoded.
fn bytes_ok(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return false,
            b if b < 0x20 || b == 0x7f => return false,
            b'%' => {
                let Some(decoded) = decode_escape(bytes.get(i + 1..i + 3)) else {
                    return false;
                };
                if forbidden_escape(decoded) {
                    return false;
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    true
}

/// The byte a `%XY` escape stands for, when both digits are hex.
fn decode_escape(digits: Option<&[u8]>) -> Option<u8> {
    let [hi, lo] = digits? else {
        return None;
    };
    let hi = char::from(*hi).to_digit(16)?;
    let lo = char::from(*lo).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

/// Escapes that would let a segment turn into a separator, a dot segment or a
/// terminator after decoding; control characters are refused encoded as well
/// as raw, so that a decoding store never sees one.
fn forbidden_escape(b: u8) -> bool {
    matches!(b, b'/' | b'\\' | b'.') || b < 0x20 || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "/",
            "/v1/users/u1/conversations",
            "/v1/users/u1/files/a.txt",
            "/v1/users/u%20x/files/b..c",
            "/v1/users/u1/files/%41%7e",
            "/a/.hidden",
        ] {
            assert!(is_canonical(p), "{p}");
        }
    }

    #[test]
    fn rejects_tricks() {
        for p in [
            "",
            "v1/users",
            "//",
            "/v1//users",
            "/v1/users/",
            "/v1/./users",
            "/v1/../users",
            "/..",
            "/.",
            "/v1\\users",
            "/v1/%2e%2e/users",
            "/v1/%2E/users",
            "/v1/users%2fu1",
            "/v1/users%2Fu1",
            "/v1/users%5cu1",
            "/v1/users%5Cu1",
            "/v1/users/u1%00",
            "/v1/users/u1%",
            "/v1/users/u1%4",
            "/v1/users/u1%zz",
            "/v1/users/u1%0a",
            "/v1/users/u\n1",
            "/v1/users/u\t1",
            "/v1/users/u\u{7f}1",
        ] {
            assert!(!is_canonical(p), "{p:?}");
        }
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._%~-]{0,6}"
    }

    proptest! {
        #[test]
        fn dot_dot_segments_are_always_refused(
            before in proptest::collection::vec(segment(), 0..4),
            after in proptest::collection::vec(segment(), 0..4),
        ) {
            let mut segs = before;
            segs.push("..".to_string());
            segs.extend(after);
            let path = format!("/{}", segs.join("/"));
            prop_assert!(!is_canonical(&path), "{}", path);
        }

        #[test]
        fn encoded_dots_are_always_refused(
            prefix in "[a-zA-Z0-9/._-]{0,12}",
            suffix in "[a-zA-Z0-9/._-]{0,12}",
            upper in any::<bool>(),
        ) {
            let dot = if upper { "%2E" } else { "%2e" };
            let path = format!("/{prefix}{dot}{suffix}");
            prop_assert!(!is_canonical(&path), "{}", path);
        }

        #[test]
        fn never_panics(path in "\\PC{0,40}") {
            let _ = is_canonical(&path);
        }
    }
}
