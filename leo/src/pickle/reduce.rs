//! REDUCE and BUILD: the numpy and codecs callables a numpy-array pickle
//! needs (`_reconstruct`, `dtype`, `_frombuffer`, `_codecs.encode`,
//! `bytes`) and the BUILD states of dtypes and arrays.

use super::numpy::{element_count, Array, ArrayData, ByteOrder, Dtype};
use super::object::{Buf, Callable, Object, Value};
use super::{Machine, Step};
use crate::error::PickleError;

impl Machine<'_> {
    fn tuple_items(&self, v: Value, what: &str) -> Step<Vec<Value>> {
        match self.obj(v) {
            Some(Object::Tuple(items)) => Ok(items.clone()),
            _ => Err(self.malformed(format!(
                "{what} must be a tuple, found {}",
                self.describe(v)
            ))),
        }
    }

    fn int(&self, v: Value, what: &str) -> Step<i64> {
        match v {
            Value::Int(i) => Ok(i),
            Value::Bool(b) => Ok(i64::from(b)),
            _ => Err(self.malformed(format!("{what} must be an int, found {}", self.describe(v)))),
        }
    }

    fn flag(&self, v: Value, what: &str) -> Step<bool> {
        Ok(self.int(v, what)? != 0)
    }

    fn shape(&self, v: Value) -> Step<Vec<usize>> {
        let dims = self.tuple_items(v, "array shape")?;
        dims.into_iter()
            .map(|d| {
                let d = self.int(d, "array dimension")?;
                usize::try_from(d)
                    .map_err(|_| self.malformed(format!("negative array dimension {d}")))
            })
            .collect()
    }

    fn dtype(&self, v: Value) -> Step<Dtype> {
        match self.obj(v) {
            Some(Object::Dtype(d)) => Ok(*d),
            _ => Err(self.malformed(format!(
                "expected a numpy dtype, found {}",
                self.describe(v)
            ))),
        }
    }

    fn string_arg(&self, v: Value, what: &str) -> Step<&[u8]> {
        match self.obj(v) {
            Some(Object::Bytes(b)) => Ok(b),
            Some(Object::Text(t)) => Ok(t.raw()),
            _ => Err(self.malformed(format!(
                "{what} must be a string, found {}",
                self.describe(v)
            ))),
        }
    }

    pub(super) fn reduce(&mut self) -> Step<()> {
        let args = self.pop()?;
        let func = self.pop()?;
        let callable = match self.obj(func) {
            Some(Object::Callable(c)) => c.clone(),
            _ => return Err(self.malformed(format!("REDUCE calls {}", self.describe(func)))),
        };
        let args = self.tuple_items(args, "REDUCE arguments")?;
        let result = match callable {
            Callable::Reconstruct => {
                let cls = args.first().and_then(|&a| self.obj(a));
                if !matches!(cls, Some(Object::Callable(Callable::NdArray))) {
                    return Err(
                        self.malformed("_reconstruct of something other than numpy.ndarray")
                    );
                }
                Object::Array(None)
            }
            Callable::Dtype => {
                let typestr = match args.first() {
                    Some(&v) => self.string_arg(v, "dtype type string")?,
                    None => return Err(self.malformed("numpy.dtype called without arguments")),
                };
                let dtype = Dtype::from_typestr(typestr).ok_or_else(|| {
                    self.malformed(format!(
                        "unsupported dtype type string {:?}",
                        String::from_utf8_lossy(typestr)
                    ))
                })?;
                Object::Dtype(dtype)
            }
            Callable::CodecsEncode => {
                let (text, encoding) = match args[..] {
                    [t, e] => (t, self.string_arg(e, "encoding")?),
                    _ => return Err(self.malformed("_codecs.encode needs 2 arguments")),
                };
                if !matches!(
                    encoding,
                    b"latin1" | b"latin-1" | b"iso-8859-1" | b"iso8859-1"
                ) {
                    return Err(self.malformed(format!(
                        "_codecs.encode with encoding {:?}",
                        String::from_utf8_lossy(encoding)
                    )));
                }
                let bytes = match self.obj(text) {
                    Some(Object::Text(t)) => t.to_latin1(),
                    _ => None,
                };
                Object::Bytes(
                    bytes
                        .ok_or_else(|| self.malformed("_codecs.encode of a non-latin-1 string"))?,
                )
            }
            Callable::Bytes => {
                if !args.is_empty() {
                    return Err(self.malformed("bytes() with arguments"));
                }
                Object::Bytes(Buf::Borrowed(&[]))
            }
            Callable::FromBuffer => {
                let [buffer, dtype, shape, order] = args[..] else {
                    return Err(self.malformed("_frombuffer needs 4 arguments"));
                };
                let dtype = self.dtype(dtype)?;
                let shape = self.shape(shape)?;
                let fortran = match self.string_arg(order, "array order")? {
                    b"C" => false,
                    b"F" => true,
                    _ => return Err(self.malformed("_frombuffer order must be 'C' or 'F'")),
                };
                let data = self.raw_array_data(buffer, &shape, dtype)?;
                Object::Array(Some(Array {
                    shape,
                    dtype,
                    fortran,
                    data,
                }))
            }
            Callable::NdArray | Callable::Other(_) => {
                return Err(PickleError::UnsupportedCallable {
                    name: match callable {
                        Callable::Other(name) => name,
                        _ => "numpy.ndarray".to_string(),
                    },
                    offset: self.op_at,
                })
            }
        };
        self.push_obj(result);
        Ok(())
    }

    pub(super) fn build(&mut self) -> Step<()> {
        let state = self.pop()?;
        let target = self.top()?;
        let built = match self.obj(target) {
            Some(Object::Array(None)) => Object::Array(Some(self.array_state(state)?)),
            Some(Object::Dtype(d)) => Object::Dtype(self.dtype_state(*d, state)?),
            Some(Object::Callable(Callable::Other(name))) => {
                return Err(PickleError::UnsupportedCallable {
                    name: name.clone(),
                    offset: self.op_at,
                })
            }
            _ => return Err(self.malformed(format!("BUILD on {}", self.describe(target)))),
        };
        if let Some(slot) = self.obj_mut(target) {
            *slot = built;
        }
        Ok(())
    }

    /// numpy's dtype state: `(version, byteorder, subarray, names, fields,
    /// elsize, alignment, flags[, metadata])`.
    fn dtype_state(&self, mut dtype: Dtype, state: Value) -> Step<Dtype> {
        let items = self.tuple_items(state, "dtype state")?;
        if !(7..=9).contains(&items.len()) {
            return Err(self.malformed(format!("dtype state has {} items", items.len())));
        }
        let order = self.string_arg(items[1], "dtype byte order")?;
        dtype.order = match order {
            [c] => ByteOrder::from_char(*c),
            _ => None,
        }
        .ok_or_else(|| {
            self.malformed(format!(
                "bad dtype byte order {:?}",
                String::from_utf8_lossy(order)
            ))
        })?;
        if items[2] != Value::None || items[3] != Value::None {
            return Err(self.malformed("structured or subarray dtypes are not supported"));
        }
        let elsize = self.int(items[5], "dtype element size")?;
        if elsize >= 0 {
            dtype.itemsize = usize::try_from(elsize)
                .map_err(|_| self.malformed("dtype element size too large"))?;
        }
        Ok(dtype)
    }

    /// numpy's array state: `(version, shape, dtype, fortran, data)` or,
    /// from old numpy, `(shape, dtype, fortran, data)`.
    fn array_state(&self, state: Value) -> Step<Array> {
        let items = self.tuple_items(state, "array state")?;
        let [shape, dtype, fortran, data] = match items[..] {
            [version, s, d, f, r] => {
                self.int(version, "array state version")?;
                [s, d, f, r]
            }
            [s, d, f, r] => [s, d, f, r],
            _ => return Err(self.malformed(format!("array state has {} items", items.len()))),
        };
        let shape = self.shape(shape)?;
        let dtype = self.dtype(dtype)?;
        let fortran = self.flag(fortran, "array fortran flag")?;
        let data = if dtype.kind == b'O' {
            let count =
                element_count(&shape).ok_or_else(|| self.malformed("array shape overflows"))?;
            match (data, self.obj(data)) {
                (Value::Obj(id), Some(Object::List(items))) if items.len() == count => {
                    ArrayData::Objects(id)
                }
                (_, Some(Object::List(items))) => {
                    return Err(self.malformed(format!(
                        "object array of shape {shape:?} holds {} items",
                        items.len()
                    )))
                }
                _ => {
                    return Err(self.malformed(format!(
                        "object array data must be a list, found {}",
                        self.describe(data)
                    )))
                }
            }
        } else {
            self.raw_array_data(data, &shape, dtype)?
        };
        Ok(Array {
            shape,
            dtype,
            fortran,
            data,
        })
    }

    fn raw_array_data(&self, data: Value, shape: &[usize], dtype: Dtype) -> Step<ArrayData> {
        let (id, len) = match (data, self.obj(data)) {
            (Value::Obj(id), Some(Object::Bytes(b))) => (id, b.len()),
            _ => {
                return Err(self.malformed(format!(
                    "array data must be a byte string, found {}",
                    self.describe(data)
                )))
            }
        };
        let needed = element_count(shape).and_then(|n| n.checked_mul(dtype.itemsize));
        if needed != Some(len) {
            return Err(self.malformed(format!(
                "array data has {len} bytes but shape {shape:?} of {dtype} needs {}",
                needed.map_or_else(|| "too many".to_string(), |n| n.to_string())
            )));
        }
        Ok(ArrayData::Raw(id))
    }
}
