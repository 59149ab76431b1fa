//! The objects a pickle builds: a small value type on the stack and in the
//! memo, and heap objects that values refer to by index (so memo references
//! share one object, as in Python, and nothing large is ever copied).

use std::borrow::Cow;
use std::ops::Deref;
use std::rc::Rc;

use super::numpy::{Array, Dtype};

/// Index of an object in the pickle's heap.
pub(crate) type ObjId = usize;

/// A stack or memo entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Obj(ObjId),
}

/// Bytes borrowed from the input, or decoded once and shared.
#[derive(Debug, Clone)]
pub(crate) enum Buf<'a> {
    Borrowed(&'a [u8]),
    Shared(Rc<Vec<u8>>),
}

impl Deref for Buf<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Buf::Borrowed(b) => b,
            Buf::Shared(v) => v,
        }
    }
}

impl<'a> From<Cow<'a, [u8]>> for Buf<'a> {
    fn from(c: Cow<'a, [u8]>) -> Self {
        match c {
            Cow::Borrowed(b) => Buf::Borrowed(b),
            Cow::Owned(v) => Buf::Shared(Rc::new(v)),
        }
    }
}

/// A Python unicode string: UTF-8 (BINUNICODE) or, when every code point is
/// below 256, latin-1 (the UNICODE opcode's raw-unicode-escape text), so
/// that `_codecs.encode(text, "latin1")` needs no copy in that case.
#[derive(Debug, Clone)]
pub(crate) enum Text<'a> {
    Utf8(Cow<'a, str>),
    Latin1(Buf<'a>),
}

impl<'a> Text<'a> {
    /// The stored bytes (UTF-8 or latin-1). Both encodings keep ASCII
    /// characters as single bytes, which is all key parsing relies on.
    pub(crate) fn raw(&self) -> &[u8] {
        match self {
            Text::Utf8(s) => s.as_bytes(),
            Text::Latin1(b) => b,
        }
    }

    /// Encodes to latin-1, as `_codecs.encode(text, "latin1")`; `None` if a
    /// code point is above 255.
    pub(crate) fn to_latin1(&self) -> Option<Buf<'a>> {
        match self {
            Text::Latin1(b) => Some(b.clone()),
            Text::Utf8(s) => utf8_to_latin1(s.as_bytes()).map(|v| Buf::Shared(Rc::new(v))),
        }
    }
}

/// Latin-1 bytes of UTF-8 text, `None` if the bytes are not UTF-8 or a
/// code point is above 255. Works on bytes (code points 128-255 are the
/// two-byte sequences starting with 0xC2 or 0xC3): this is the hot loop for
/// array data written by Python 3.
pub(crate) fn utf8_to_latin1(utf8: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; utf8.len()];
    let mut n = 0;
    let mut i = 0;
    while let Some(&b) = utf8.get(i) {
        if b < 0x80 {
            out[n] = b;
            i += 1;
        } else {
            let cont = *utf8.get(i + 1)?;
            if !(b == 0xc2 || b == 0xc3) || cont & 0xc0 != 0x80 {
                return None;
            }
            out[n] = ((b & 0x03) << 6) | (cont & 0x3f);
            i += 2;
        }
        n += 1;
    }
    out.truncate(n);
    out.shrink_to_fit();
    Some(out)
}

/// A Python callable this reader knows how to apply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Callable {
    /// `numpy.core.multiarray._reconstruct` (also `numpy._core`).
    Reconstruct,
    /// `numpy.ndarray` (only as `_reconstruct`'s first argument).
    NdArray,
    /// `numpy.dtype`.
    Dtype,
    /// `numpy.core.numeric._frombuffer` (protocol 5).
    FromBuffer,
    /// `_codecs.encode` (bytes under Python 3, protocols 0-2).
    CodecsEncode,
    /// `builtins.bytes` / `__builtin__.bytes` (empty bytes, protocols 0-2).
    Bytes,
    /// Anything else: an error if called.
    Other(String),
}

impl Callable {
    /// Resolves a GLOBAL's module and name.
    pub(crate) fn resolve(module: &str, name: &str) -> Callable {
        match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                Callable::Reconstruct
            }
            ("numpy", "ndarray") => Callable::NdArray,
            ("numpy", "dtype") => Callable::Dtype,
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Callable::FromBuffer,
            ("_codecs", "encode") => Callable::CodecsEncode,
            ("__builtin__" | "builtins", "bytes") => Callable::Bytes,
            _ => Callable::Other(format!("{module}.{name}")),
        }
    }
}

/// A heap object.
#[derive(Debug, Clone)]
pub(crate) enum Object<'a> {
    /// Python 2 `str` or Python 3 `bytes`.
    Bytes(Buf<'a>),
    /// Python `unicode` / Python 3 `str`.
    Text(Text<'a>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Entries in insertion order; a later entry overrides an earlier one.
    Dict(Vec<(Value, Value)>),
    Callable(Callable),
    /// An ndarray; `None` between `_reconstruct` and its BUILD.
    Array(Option<Array>),
    Dtype(Dtype),
}

impl Object<'_> {
    /// A short description for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Object::Bytes(_) => "a byte string",
            Object::Text(_) => "a unicode string",
            Object::Tuple(_) => "a tuple",
            Object::List(_) => "a list",
            Object::Dict(_) => "a dict",
            Object::Callable(_) => "a callable",
            Object::Array(Some(_)) => "an ndarray",
            Object::Array(None) => "an unbuilt ndarray",
            Object::Dtype(_) => "a numpy dtype",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_from_utf8() {
        let all: String = (0u8..=255).map(char::from).collect();
        assert_eq!(utf8_to_latin1(all.as_bytes()), Some((0u8..=255).collect()));
        assert_eq!(utf8_to_latin1("\u{100}".as_bytes()), None);
        assert_eq!(utf8_to_latin1("a\u{20ac}".as_bytes()), None);
        assert_eq!(utf8_to_latin1(b"\xc3"), None);
        assert_eq!(utf8_to_latin1(b"\xc3A"), None);
    }
}
