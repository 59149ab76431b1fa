//! Decoders for protocol 0's text opcodes: STRING holds a Python 2 `repr`
//! (undone like `codecs.escape_decode`), UNICODE holds raw-unicode-escape
//! text (latin-1 bytes plus `\uXXXX` / `\UXXXXXXXX` escapes).

use std::borrow::Cow;
use std::rc::Rc;

use super::object::{Buf, Text};

/// Undoes Python's string escapes: `\\ \' \" \a \b \f \n \r \t \v`,
/// `\xHH`, octal `\ooo`, backslash-newline; an unknown escape is kept as is.
pub(crate) fn escape_decode(s: &[u8]) -> Result<Cow<'_, [u8]>, &'static str> {
    if !s.contains(&b'\\') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = s.get(i) else {
            return Err("trailing backslash in STRING");
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'x' => {
                let hex = s.get(i..i + 2).ok_or("invalid \\x escape in STRING")?;
                let v = hex_value(hex).ok_or("invalid \\x escape in STRING")?;
                out.push(v as u8);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match s.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// Decodes raw-unicode-escape: every byte is a code point below 256 except
/// `\u` + 4 hex digits and `\U` + 8 hex digits after an odd number of
/// backslashes. Stays latin-1 while every code point is below 256.
pub(crate) fn raw_unicode_escape_decode(s: &[u8]) -> Result<Text<'_>, &'static str> {
    if !s.contains(&b'\\') {
        return Ok(Text::Latin1(Buf::Borrowed(s)));
    }
    let mut out = Decoded::Latin1(Vec::with_capacity(s.len()));
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(u32::from(s[i]))?;
            i += 1;
            continue;
        }
        let run_start = i;
        while i < s.len() && s[i] == b'\\' {
            i += 1;
        }
        let run = i - run_start;
        let digits = match s.get(i) {
            Some(b'u') if run % 2 == 1 => 4,
            Some(b'U') if run % 2 == 1 => 8,
            _ => 0,
        };
        let literal = if digits == 0 { run } else { run - 1 };
        for _ in 0..literal {
            out.push(u32::from(b'\\'))?;
        }
        if digits > 0 {
            let hex = s
                .get(i + 1..i + 1 + digits)
                .ok_or("truncated \\u escape in UNICODE")?;
            let v = hex_value(hex).ok_or("invalid \\u escape in UNICODE")?;
            out.push(v)?;
            i += 1 + digits;
        }
    }
    Ok(out.finish())
}

/// Value of a run of hex digits, `None` if one is not a hex digit.
fn hex_value(hex: &[u8]) -> Option<u32> {
    hex.iter().try_fold(0u32, |v, &h| {
        let d = char::from(h).to_digit(16)?;
        v.checked_mul(16)?.checked_add(d)
    })
}

/// Decoded text, latin-1 until a code point above 255 appears.
enum Decoded {
    Latin1(Vec<u8>),
    Utf8(String),
}

impl Decoded {
    fn push(&mut self, code: u32) -> Result<(), &'static str> {
        match self {
            Decoded::Latin1(v) => match u8::try_from(code) {
                Ok(b) => v.push(b),
                Err(_) => {
                    let mut s: String = v.iter().map(|&b| char::from(b)).collect();
                    s.push(char::from_u32(code).ok_or("invalid code point in UNICODE")?);
                    *self = Decoded::Utf8(s);
                }
            },
            Decoded::Utf8(s) => {
                s.push(char::from_u32(code).ok_or("invalid code point in UNICODE")?)
            }
        }
        Ok(())
    }

    fn finish(self) -> Text<'static> {
        match self {
            Decoded::Latin1(v) => Text::Latin1(Buf::Shared(Rc::new(v))),
            Decoded::Utf8(s) => Text::Utf8(Cow::Owned(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_decode_matches_python() {
        // Python 2: repr('\x00a\'\\\n\xff') == "'\\x00a\\'\\\\\\n\\xff'"
        let d = escape_decode(b"\\x00a\\'\\\\\\n\\xff\\101\\q").unwrap();
        assert_eq!(&d[..], b"\x00a'\\\n\xffA\\q");
        assert!(escape_decode(b"ab\\").is_err());
        assert!(escape_decode(b"\\x4").is_err());
        assert!(matches!(escape_decode(b"plain"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn raw_unicode_escape_matches_python() {
        // '\\u005c' is how pickle writes a backslash; '\\\\u' is two literal
        // backslashes followed by 'u'.
        let t = raw_unicode_escape_decode(b"a\\u005c\\u0000\xff\\\\u").unwrap();
        assert_eq!(t.raw(), b"a\\\x00\xff\\\\u");
        assert!(matches!(t, Text::Latin1(_)));
        let t = raw_unicode_escape_decode(b"x\\u20ac\xe9").unwrap();
        match t {
            Text::Utf8(s) => assert_eq!(s, "x\u{20ac}\u{e9}"),
            Text::Latin1(_) => panic!("expected UTF-8 text"),
        }
        assert!(raw_unicode_escape_decode(b"\\u12").is_err());
        assert!(raw_unicode_escape_decode(b"\\ud800").is_err());
    }
}
