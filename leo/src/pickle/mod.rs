//! A small pickle virtual machine: enough of protocols 0 to 5 to rebuild a
//! dict of numpy arrays (DeepMind LEO's embedding files) or a bare numpy
//! array (the AWGIM repository's repacked files), as written by Python 2
//! (`str` as (SHORT_)BINSTRING / STRING) or Python 3 (`bytes` as
//! `_codecs.encode(<latin-1 text>, "latin1")` under protocols 0-2, as
//! (SHORT_)BINBYTES(8) from protocol 3, as `_frombuffer` under protocol 5).
//!
//! The machine runs once over the input in linear time. Strings and raw
//! array data are borrowed from the input when the opcode stores them
//! verbatim; values on the stack and in the memo are small copies that refer
//! to heap objects by index, so memo references share one object (a dtype
//! BUILT once and fetched again with BINGET is the built one). Every length
//! is checked against the remaining input before use and every failure is a
//! [`PickleError`] with the byte offset; nothing panics on malformed input.
//! Out of scope: class instances (INST, OBJ, NEWOBJ), extension registry,
//! persistent ids, sets, out-of-band buffers.

mod escape;
mod numpy;
mod object;
mod reduce;

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

pub(crate) use numpy::{Array, ArrayData, ByteOrder};
pub(crate) use object::{Object, Value};

use crate::error::PickleError;
use object::{Buf, Callable, ObjId, Text};

/// The result of running a pickle: the heap and the object STOP returned.
pub(crate) struct Pickle<'a> {
    heap: Vec<Object<'a>>,
    root: Value,
}

impl<'a> Pickle<'a> {
    /// Runs the pickle machine over `input`.
    pub(crate) fn parse(input: &'a [u8]) -> Result<Pickle<'a>, PickleError> {
        Machine::new(input).run()
    }

    /// The object returned by STOP.
    pub(crate) fn root(&self) -> Value {
        self.root
    }

    /// The heap object a value refers to, if it refers to one.
    pub(crate) fn object(&self, v: Value) -> Option<&Object<'a>> {
        match v {
            Value::Obj(id) => self.heap.get(id),
            _ => None,
        }
    }

    /// A short description of a value for error messages.
    pub(crate) fn describe(&self, v: Value) -> &'static str {
        describe(&self.heap, v)
    }

    /// The bytes of a byte string or unicode string (UTF-8 or latin-1).
    pub(crate) fn string(&self, v: Value) -> Option<&[u8]> {
        match self.object(v)? {
            Object::Bytes(b) => Some(b),
            Object::Text(t) => Some(t.raw()),
            _ => None,
        }
    }

    /// Looks up an ASCII string key in a dict (the last entry wins, as in
    /// Python); `None` if `dict` is not a dict or lacks the key.
    pub(crate) fn dict_get(&self, dict: Value, key: &str) -> Option<Value> {
        let Some(Object::Dict(entries)) = self.object(dict) else {
            return None;
        };
        entries
            .iter()
            .rev()
            .find(|(k, _)| self.string(*k) == Some(key.as_bytes()))
            .map(|&(_, v)| v)
    }

    /// The built array a value refers to.
    pub(crate) fn array(&self, v: Value) -> Option<&Array> {
        match self.object(v)? {
            Object::Array(Some(a)) => Some(a),
            _ => None,
        }
    }

    /// The raw bytes of a non-object array.
    pub(crate) fn raw_data(&self, array: &Array) -> Option<&[u8]> {
        match (&array.data, self.heap.get(array_data_id(array))) {
            (ArrayData::Raw(_), Some(Object::Bytes(b))) => Some(b),
            _ => None,
        }
    }

    /// The elements of an object array.
    pub(crate) fn objects(&self, array: &Array) -> Option<&[Value]> {
        match (&array.data, self.heap.get(array_data_id(array))) {
            (ArrayData::Objects(_), Some(Object::List(items))) => Some(items),
            _ => None,
        }
    }
}

/// A short description of a value for error messages.
fn describe(heap: &[Object<'_>], v: Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::Obj(id) => heap.get(id).map_or("a dangling reference", Object::kind),
    }
}

fn array_data_id(array: &Array) -> ObjId {
    match array.data {
        ArrayData::Raw(id) | ArrayData::Objects(id) => id,
    }
}

/// Names of the opcodes this reader refuses, for error messages.
fn unsupported_name(op: u8) -> &'static str {
    match op {
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x97 => "NEXT_BUFFER",
        _ => "unknown",
    }
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    /// Start of the opcode being executed (for error offsets).
    op_at: usize,
    stack: Vec<Value>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    heap: Vec<Object<'a>>,
}

type Step<T> = Result<T, PickleError>;

/// Unicode strings at least this long are stored as latin-1 when they can be.
const LATIN1_DECODE_MIN: usize = 4096;

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Self {
        Machine {
            input,
            pos: 0,
            op_at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            heap: Vec::new(),
        }
    }

    fn malformed(&self, problem: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            offset: self.op_at,
            problem: problem.into(),
        }
    }

    // ---- reading the input ----

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.input.len());
        match end {
            Some(end) => {
                let bytes = &self.input[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            None => Err(PickleError::Truncated {
                offset: self.op_at,
                end: self.input.len(),
            }),
        }
    }

    fn take_array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Step<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u32_le(&mut self) -> Step<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn u64_le(&mut self) -> Step<u64> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// Bytes up to the next newline (excluded; the newline is consumed).
    fn line(&mut self) -> Step<&'a [u8]> {
        let rest = &self.input[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                self.pos += n + 1;
                Ok(&rest[..n])
            }
            None => Err(PickleError::Truncated {
                offset: self.op_at,
                end: self.input.len(),
            }),
        }
    }

    fn line_str(&mut self, what: &str) -> Step<&'a str> {
        let line = self.line()?;
        std::str::from_utf8(line).map_err(|_| self.malformed(format!("{what} is not UTF-8")))
    }

    /// A length prefix of `size` bytes, checked to fit in the remaining input.
    fn length(&mut self, size: usize) -> Step<usize> {
        let n = match size {
            1 => u64::from(self.u8()?),
            4 => u64::from(self.u32_le()?),
            _ => self.u64_le()?,
        };
        let remaining = self.input.len() - self.pos;
        match usize::try_from(n) {
            Ok(n) if n <= remaining => Ok(n),
            _ => Err(PickleError::Truncated {
                offset: self.op_at,
                end: self.input.len(),
            }),
        }
    }

    // ---- the stack ----

    fn frame_base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Step<Value> {
        if self.stack.len() <= self.frame_base() {
            return Err(self.malformed("stack underflow"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top(&self) -> Step<Value> {
        if self.stack.len() <= self.frame_base() {
            return Err(self.malformed("stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    /// Pops everything above the last MARK, and the mark.
    fn pop_mark(&mut self) -> Step<Vec<Value>> {
        let base = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed("no MARK on the stack"))?;
        Ok(self.stack.split_off(base))
    }

    fn alloc(&mut self, object: Object<'a>) -> Value {
        self.heap.push(object);
        Value::Obj(self.heap.len() - 1)
    }

    fn push_obj(&mut self, object: Object<'a>) {
        let v = self.alloc(object);
        self.stack.push(v);
    }

    fn obj_mut(&mut self, v: Value) -> Option<&mut Object<'a>> {
        match v {
            Value::Obj(id) => self.heap.get_mut(id),
            _ => None,
        }
    }

    fn obj(&self, v: Value) -> Option<&Object<'a>> {
        match v {
            Value::Obj(id) => self.heap.get(id),
            _ => None,
        }
    }

    fn describe(&self, v: Value) -> &'static str {
        describe(&self.heap, v)
    }

    fn memo_get(&self, key: u64) -> Step<Value> {
        self.memo
            .get(&key)
            .copied()
            .ok_or_else(|| self.malformed(format!("memo key {key} not defined")))
    }

    fn memo_put(&mut self, key: u64) -> Step<()> {
        let v = self.top()?;
        self.memo.insert(key, v);
        Ok(())
    }

    // ---- the main loop ----

    fn run(mut self) -> Step<Pickle<'a>> {
        loop {
            self.op_at = self.pos;
            let op = self.u8()?;
            match op {
                // framing and protocol
                0x80 => {
                    let protocol = self.u8()?;
                    if protocol > 5 {
                        return Err(PickleError::UnsupportedProtocol {
                            protocol,
                            offset: self.op_at,
                        });
                    }
                }
                0x95 => {
                    self.u64_le()?;
                }
                b'.' => {
                    let root = self.pop()?;
                    return Ok(Pickle {
                        heap: self.heap,
                        root,
                    });
                }
                // stack manipulation
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    if self.stack.len() > self.frame_base() {
                        self.pop()?;
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?;
                    self.stack.push(v);
                }
                // memo
                b'p' => {
                    let key = self.text_index()?;
                    self.memo_put(key)?;
                }
                b'q' => {
                    let key = u64::from(self.u8()?);
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = u64::from(self.u32_le()?);
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                b'g' => {
                    let key = self.text_index()?;
                    let v = self.memo_get(key)?;
                    self.stack.push(v);
                }
                b'h' => {
                    let key = u64::from(self.u8()?);
                    let v = self.memo_get(key)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let key = u64::from(self.u32_le()?);
                    let v = self.memo_get(key)?;
                    self.stack.push(v);
                }
                // scalars
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'I' => {
                    let v = self.text_int_opcode()?;
                    self.stack.push(v);
                }
                b'L' => {
                    let line = self.line_str("LONG")?;
                    let digits = line.strip_suffix('L').unwrap_or(line);
                    let v = self.parse_int(digits)?;
                    self.stack.push(Value::Int(v));
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take_array()?);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    let n = self.length(1)?;
                    let v = self.long_bytes(n)?;
                    self.stack.push(Value::Int(v));
                }
                0x8b => {
                    let n = self.length(4)?;
                    let v = self.long_bytes(n)?;
                    self.stack.push(Value::Int(v));
                }
                b'F' => {
                    let line = self.line_str("FLOAT")?;
                    let v: f64 = line
                        .trim()
                        .parse()
                        .map_err(|_| self.malformed(format!("bad FLOAT literal {line:?}")))?;
                    self.stack.push(Value::Float(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take_array()?);
                    self.stack.push(Value::Float(v));
                }
                // byte strings
                b'S' => {
                    let line = self.line()?;
                    let inner = match line {
                        [q @ (b'\'' | b'"'), inner @ .., last] if last == q => inner,
                        _ => return Err(self.malformed("STRING not enclosed in quotes")),
                    };
                    let bytes = escape::escape_decode(inner).map_err(|p| self.malformed(p))?;
                    self.push_obj(Object::Bytes(Buf::from(bytes)));
                }
                b'T' => {
                    let n = self.length(4)?;
                    // BINSTRING's length is a signed 32-bit integer.
                    if n > i32::MAX as usize {
                        return Err(self.malformed("BINSTRING with negative length"));
                    }
                    let bytes = self.take(n)?;
                    self.push_obj(Object::Bytes(Buf::Borrowed(bytes)));
                }
                b'U' | b'C' => {
                    let n = self.length(1)?;
                    let bytes = self.take(n)?;
                    self.push_obj(Object::Bytes(Buf::Borrowed(bytes)));
                }
                b'B' => {
                    let n = self.length(4)?;
                    let bytes = self.take(n)?;
                    self.push_obj(Object::Bytes(Buf::Borrowed(bytes)));
                }
                0x8e | 0x96 => {
                    let n = self.length(8)?;
                    let bytes = self.take(n)?;
                    self.push_obj(Object::Bytes(Buf::Borrowed(bytes)));
                }
                0x98 => {
                    // READONLY_BUFFER: a no-op on an in-band buffer.
                    self.top()?;
                }
                // unicode strings
                b'V' => {
                    let line = self.line()?;
                    let text =
                        escape::raw_unicode_escape_decode(line).map_err(|p| self.malformed(p))?;
                    self.push_obj(Object::Text(text));
                }
                0x8c => {
                    let n = self.length(1)?;
                    self.push_utf8(n)?;
                }
                b'X' => {
                    let n = self.length(4)?;
                    self.push_utf8(n)?;
                }
                0x8d => {
                    let n = self.length(8)?;
                    self.push_utf8(n)?;
                }
                // containers
                b')' => self.push_obj(Object::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Object::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < self.frame_base() + n {
                        return Err(self.malformed("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_obj(Object::Tuple(items));
                }
                b']' => self.push_obj(Object::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Object::List(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.list_extend(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.list_extend(items)?;
                }
                b'}' => self.push_obj(Object::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push_obj(Object::Dict(pairs));
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.dict_extend(vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.dict_extend(pairs)?;
                }
                // callables
                b'c' => {
                    let module = self.line_str("GLOBAL module")?;
                    let name = self.line_str("GLOBAL name")?;
                    self.push_obj(Object::Callable(Callable::resolve(module, name)));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let text = |v: Value| match self.obj(v) {
                        Some(Object::Text(t)) => std::str::from_utf8(t.raw()).ok(),
                        _ => None,
                    };
                    let callable = match (text(module), text(name)) {
                        (Some(m), Some(n)) => Callable::resolve(m, n),
                        _ => return Err(self.malformed("STACK_GLOBAL needs two strings")),
                    };
                    self.push_obj(Object::Callable(callable));
                }
                b'R' => self.reduce()?,
                b'b' => self.build()?,
                _ => {
                    return Err(PickleError::UnsupportedOpcode {
                        opcode: op,
                        name: unsupported_name(op),
                        offset: self.op_at,
                    })
                }
            }
        }
    }

    fn push_utf8(&mut self, n: usize) -> Step<()> {
        let bytes = self.take(n)?;
        // Long strings are array data (Python 3's `_codecs.encode` form):
        // decode them to latin-1 in one pass; short ones (keys) are borrowed.
        if n >= LATIN1_DECODE_MIN {
            if let Some(latin1) = object::utf8_to_latin1(bytes) {
                self.push_obj(Object::Text(Text::Latin1(Buf::Shared(Rc::new(latin1)))));
                return Ok(());
            }
        }
        let s = std::str::from_utf8(bytes)
            .map_err(|_| self.malformed("unicode string is not valid UTF-8"))?;
        self.push_obj(Object::Text(Text::Utf8(Cow::Borrowed(s))));
        Ok(())
    }

    fn text_index(&mut self) -> Step<u64> {
        let line = self.line_str("memo index")?;
        line.trim()
            .parse()
            .map_err(|_| self.malformed(format!("bad memo index {line:?}")))
    }

    fn parse_int(&self, digits: &str) -> Step<i64> {
        digits.trim().parse().map_err(|_| {
            self.malformed(format!(
                "integer literal {digits:?} is not a 64-bit integer"
            ))
        })
    }

    /// INT: `I01` / `I00` are True / False (protocols 0 and 1), else a decimal.
    fn text_int_opcode(&mut self) -> Step<Value> {
        let line = self.line_str("INT")?;
        Ok(match line {
            "01" => Value::Bool(true),
            "00" => Value::Bool(false),
            _ => Value::Int(self.parse_int(line)?),
        })
    }

    /// LONG1 / LONG4 payload: little-endian two's complement.
    fn long_bytes(&mut self, n: usize) -> Step<i64> {
        let bytes = self.take(n)?;
        if bytes.is_empty() {
            return Ok(0);
        }
        let negative = bytes[bytes.len() - 1] & 0x80 != 0;
        let fill = if negative { 0xff } else { 0x00 };
        let mut buf = [fill; 8];
        let (low, high) = bytes.split_at(bytes.len().min(8));
        buf[..low.len()].copy_from_slice(low);
        let v = i64::from_le_bytes(buf);
        if high.iter().any(|&b| b != fill) || (v < 0) != negative {
            return Err(self.malformed("integer does not fit in 64 bits"));
        }
        Ok(v)
    }

    fn pairs(&self, items: Vec<Value>) -> Step<Vec<(Value, Value)>> {
        if items.len() % 2 != 0 {
            return Err(self.malformed("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
    }

    fn list_extend(&mut self, items: Vec<Value>) -> Step<()> {
        let target = self.top()?;
        let kind = self.describe(target);
        match self.obj_mut(target) {
            Some(Object::List(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => Err(self.malformed(format!("APPEND to {kind}"))),
        }
    }

    fn dict_extend(&mut self, pairs: Vec<(Value, Value)>) -> Step<()> {
        let target = self.top()?;
        let kind = self.describe(target);
        match self.obj_mut(target) {
            Some(Object::Dict(dict)) => {
                dict.extend(pairs);
                Ok(())
            }
            _ => Err(self.malformed(format!("SETITEM on {kind}"))),
        }
    }
}

#[cfg(test)]
mod tests;
