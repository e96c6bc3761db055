//! The JSON the store keeps, written the way orjson writes it (compact, UTF-8 unescaped,
//! NaN and infinities as `null`), so a span stored by this module and one stored by the Python
//! converter parse to the same value.

/// Whether a byte must be escaped in a JSON string.
const fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any of the 8 bytes of `w` needs escaping (SWAR: control bytes, `"` and `\`).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let q = w ^ (ONES * b'"' as u64);
    let quote = q.wrapping_sub(ONES) & !q & HIGH;
    let s = w ^ (ONES * b'\\' as u64);
    let slash = s.wrapping_sub(ONES) & !s & HIGH;
    below_space | quote | slash != 0
}

/// Whether any byte of `bytes` needs escaping, a word at a time: the last (partial) word is
/// read overlapping the one before it, or padded with spaces when the text is shorter than a
/// word, so no byte-by-byte tail (most keys and values are a few words long).
#[inline]
fn any_needs_escape(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n < 8 {
        let mut w = [b' '; 8];
        w[..n].copy_from_slice(bytes);
        return word_needs_escape(u64::from_le_bytes(w));
    }
    let mut i = 0;
    while i + 8 <= n {
        if word_needs_escape(u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap())) {
            return true;
        }
        i += 8;
    }
    i < n && word_needs_escape(u64::from_le_bytes(bytes[n - 8..].try_into().unwrap()))
}

/// A JSON string literal: `"`, `\` and control characters escaped, everything else as is.
/// Text without any of those (nearly all of it) is copied in 8-byte steps.
pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    buf.reserve(bytes.len() + 2);
    buf.push(b'"');
    if !any_needs_escape(bytes) {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (j, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        buf.extend_from_slice(&bytes[start..j]);
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            0x08 => buf.extend_from_slice(b"\\b"),
            0x0c => buf.extend_from_slice(b"\\f"),
            _ => {
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[(b >> 4) as usize]);
                buf.push(HEX[(b & 15) as usize]);
            }
        }
        start = j + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// A JSON object of ``entries``, keys as strings, each value written by ``write_value``.
pub fn write_object<K: AsRef<str>, V>(
    buf: &mut Vec<u8>,
    entries: impl IntoIterator<Item = (K, V)>,
    mut write_value: impl FnMut(&mut Vec<u8>, V),
) {
    buf.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_str(buf, k.as_ref());
        buf.push(b':');
        write_value(buf, v);
    }
    buf.push(b'}');
}

/// A JSON number, shortest round-trip form as orjson writes it (ryu's digits, and a `+` in
/// positive exponents: `1e+16`); `null` for NaN and infinities.
pub fn write_f64(buf: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        let mut digits = ryu::Buffer::new();
        let text = digits.format_finite(f).as_bytes();
        match text.iter().position(|&b| b == b'e') {
            Some(e) if text.get(e + 1) != Some(&b'-') => {
                buf.extend_from_slice(&text[..=e]);
                buf.push(b'+');
                buf.extend_from_slice(&text[e + 1..]);
            }
            _ => buf.extend_from_slice(text),
        }
    } else {
        buf.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_quotes_backslashes_and_controls() {
        let mut buf = Vec::new();
        write_str(&mut buf, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(buf).unwrap(), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        for text in ["0123456789abcdef", "0123456789abcde\"", "01234567\u{1f}9", "ok", ""] {
            let mut buf = Vec::new();
            write_str(&mut buf, text);
            let naive = text.bytes().any(needs_escape);
            assert_eq!(buf.len() > text.len() + 2, naive, "{text:?}");
        }
    }

    #[test]
    fn the_word_check_finds_every_escape_at_every_length_and_place() {
        for n in 0..40 {
            let plain = vec![b'x'; n];
            assert!(!any_needs_escape(&plain), "{n}");
            for at in 0..n {
                for bad in [b'"', b'\\', b'\n', 0x00, 0x1f] {
                    let mut text = plain.clone();
                    text[at] = bad;
                    assert!(any_needs_escape(&text), "{n} {at} {bad}");
                }
                let mut text = plain.clone();
                text[at] = b' '; // the padding byte itself needs no escape
                assert!(!any_needs_escape(&text), "{n} {at}");
            }
        }
    }

    #[test]
    fn floats_are_shortest_and_non_finite_is_null() {
        let mut buf = Vec::new();
        write_f64(&mut buf, 0.7);
        buf.push(b' ');
        write_f64(&mut buf, f64::NAN);
        buf.push(b' ');
        write_f64(&mut buf, 1e16);
        buf.push(b' ');
        write_f64(&mut buf, 1.5e-7);
        assert_eq!(String::from_utf8(buf).unwrap(), "0.7 null 1e+16 1.5e-7");
    }
}
