//! `{split}_embeddings.pkl` files: DeepMind LEO's dict of numpy arrays, or
//! the AWGIM repository's repacked `(classes, samples, D)` array under the
//! same file name. The top-level object tells which.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::error::LeoError;
use crate::float::FloatType;
use crate::pickle::{Array, ByteOrder, Object, Pickle, Value};

/// Feature rows grouped by class, as one pickle holds them: class `c` is
/// `counts[c]` consecutive rows of `dim` values in `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Classes {
    /// The class names (LEO: the class fields of the keys, in order of first
    /// appearance); `None` for an AWGIM repacked array, whose classes have
    /// no names.
    pub names: Option<Vec<String>>,
    /// Rows of each class.
    pub counts: Vec<usize>,
    /// Feature dimension D: values per row.
    pub dim: usize,
    /// All rows, class-major, row-major (`counts` summed times `dim` values);
    /// not checked for NaN or infinities.
    pub data: Vec<f32>,
}

/// Reads the classes of a pickle held in memory: a LEO dict (`"keys"`,
/// `"embeddings"`, optional unused `"labels"`), grouped by the class field
/// of the keys in order of first appearance with rows in file order; or an
/// AWGIM-style 3-D array `(classes, samples, D)`.
pub fn read_classes(bytes: &[u8]) -> Result<Classes, LeoError> {
    let pickle = Pickle::parse(bytes)?;
    let root = pickle.root();
    match pickle.object(root) {
        Some(Object::Dict(_)) => leo_classes(&pickle),
        Some(Object::Array(Some(array))) if array.shape.len() == 3 => {
            repacked_classes(&pickle, array)
        }
        Some(Object::Array(Some(array))) => Err(LeoError::BadShape {
            array: "top-level array",
            shape: array.shape.clone(),
            expected: "(classes, samples, features)",
        }),
        _ => Err(LeoError::NotEmbeddings {
            found: pickle.describe(root).to_string(),
        }),
    }
}

/// The float type of an embedding array, or the error naming its dtype.
fn float_type(array: &Array, name: &'static str) -> Result<FloatType, LeoError> {
    let dtype = array.dtype;
    let float = match (dtype.kind, dtype.order) {
        (b'f', ByteOrder::Little) => FloatType::new(dtype.itemsize, false),
        (b'f', ByteOrder::Big) => FloatType::new(dtype.itemsize, true),
        _ => None,
    };
    float.ok_or_else(|| LeoError::UnsupportedDtype {
        array: name,
        dtype: dtype.to_string(),
        expected: "float32 or float64",
    })
}

/// Element strides (in elements) of each axis.
fn strides(array: &Array) -> Vec<usize> {
    let n = array.shape.len();
    let mut strides = vec![1usize; n];
    // Saturating: a stride that does not fit makes `gather` fail, not wrap.
    if array.fortran {
        for axis in 1..n {
            strides[axis] = strides[axis - 1].saturating_mul(array.shape[axis - 1]);
        }
    } else {
        for axis in (0..n.saturating_sub(1)).rev() {
            strides[axis] = strides[axis + 1].saturating_mul(array.shape[axis + 1]);
        }
    }
    strides
}

fn repacked_classes(pickle: &Pickle<'_>, array: &Array) -> Result<Classes, LeoError> {
    let name = "top-level array";
    let float = float_type(array, name)?;
    let bad_shape = || LeoError::BadShape {
        array: name,
        shape: array.shape.clone(),
        expected: "(classes, samples, features), all non-zero",
    };
    let [classes, samples, dim] = array.shape[..] else {
        return Err(bad_shape());
    };
    if classes == 0 || samples == 0 || dim == 0 {
        return Err(bad_shape());
    }
    let raw = pickle
        .raw_data(array)
        .ok_or(LeoError::MissingData { array: name })?;
    let st = strides(array);
    let mut data = vec![0f32; classes * samples * dim];
    for (row, dst) in data.chunks_exact_mut(dim).enumerate() {
        let (c, s) = (row / samples, row % samples);
        let start = c
            .saturating_mul(st[0])
            .saturating_add(s.saturating_mul(st[1]));
        float
            .gather(raw, start, st[2], dst)
            .ok_or(LeoError::MissingData { array: name })?;
    }
    Ok(Classes {
        names: None,
        counts: vec![samples; classes],
        dim,
        data,
    })
}

/// The keys of a LEO file as byte strings (Python 2 `str`, Python 3 `str`
/// in UTF-8 or latin-1; fixed-width `S` / `U` arrays are accepted too).
fn key_strings<'p>(pickle: &'p Pickle<'_>, keys: &Array) -> Result<Vec<Cow<'p, [u8]>>, LeoError> {
    let bad =
        |row: usize, key: String, problem: &'static str| LeoError::BadKey { row, key, problem };
    match keys.dtype.kind {
        b'O' => {
            let items = pickle
                .objects(keys)
                .ok_or(LeoError::MissingData { array: "keys" })?;
            items
                .iter()
                .enumerate()
                .map(|(row, &v)| {
                    pickle
                        .string(v)
                        .map(Cow::Borrowed)
                        .ok_or_else(|| bad(row, pickle.describe(v).to_string(), "not a string"))
                })
                .collect()
        }
        b'S' | b'U' if keys.dtype.itemsize > 0 => {
            let raw = pickle
                .raw_data(keys)
                .ok_or(LeoError::MissingData { array: "keys" })?;
            let width = keys.dtype.itemsize;
            raw.chunks_exact(width)
                .enumerate()
                .map(|(row, item)| {
                    if keys.dtype.kind == b'S' {
                        let end = item.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                        return Ok(Cow::Borrowed(&item[..end]));
                    }
                    let mut s = String::new();
                    for unit in item.chunks_exact(4) {
                        let unit = [unit[0], unit[1], unit[2], unit[3]];
                        let code = match keys.dtype.order {
                            ByteOrder::Big => u32::from_be_bytes(unit),
                            _ => u32::from_le_bytes(unit),
                        };
                        if code == 0 {
                            break;
                        }
                        let c = char::from_u32(code)
                            .ok_or_else(|| bad(row, s.clone(), "invalid code point"))?;
                        s.push(c);
                    }
                    Ok(Cow::Owned(s.into_bytes()))
                })
                .collect()
        }
        _ => Err(LeoError::UnsupportedDtype {
            array: "keys",
            dtype: keys.dtype.to_string(),
            expected: "an object array of strings, or S / U strings",
        }),
    }
}

/// Decodes a class name: UTF-8 when valid, else latin-1 (Python 2 `str`).
fn decode_name(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Splits a key `"<x>-<class>-<image file>"` into (class, image file),
/// checking that the image file name starts with "<class>_".
fn parse_key(key: &[u8], row: usize) -> Result<(&[u8], &[u8]), LeoError> {
    let bad = |problem| LeoError::BadKey {
        row,
        key: decode_name(key),
        problem,
    };
    let mut fields = key.split(|&b| b == b'-');
    let (Some(_), Some(class), Some(image), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(bad(
            "expected \"<x>-<class>-<image file>\" with exactly two '-'",
        ));
    };
    if class.is_empty() {
        return Err(bad("empty class field"));
    }
    let prefix = image.split(|&b| b == b'_').next().unwrap_or(image);
    if prefix != class {
        return Err(LeoError::ClassMismatch {
            row,
            key: decode_name(key),
            class: decode_name(class),
        });
    }
    Ok((class, image))
}

fn leo_classes(pickle: &Pickle<'_>) -> Result<Classes, LeoError> {
    let root = pickle.root();
    let entry = |key: &'static str| -> Result<&Array, LeoError> {
        let value: Value = pickle
            .dict_get(root, key)
            .ok_or(LeoError::MissingKey { key })?;
        pickle.array(value).ok_or_else(|| LeoError::NotEmbeddings {
            found: format!("a dict whose {key:?} is {}", pickle.describe(value)),
        })
    };
    let keys = entry("keys")?;
    let embeddings = entry("embeddings")?;
    let bad_shape = |array: &'static str, a: &Array, expected| LeoError::BadShape {
        array,
        shape: a.shape.clone(),
        expected,
    };
    let [rows, dim] = embeddings.shape[..] else {
        return Err(bad_shape("embeddings", embeddings, "(examples, features)"));
    };
    if rows == 0 || dim == 0 {
        return Err(bad_shape(
            "embeddings",
            embeddings,
            "(examples, features), both non-zero",
        ));
    }
    let [n_keys] = keys.shape[..] else {
        return Err(bad_shape("keys", keys, "(examples,)"));
    };
    let float = float_type(embeddings, "embeddings")?;
    if n_keys != rows {
        return Err(LeoError::LengthMismatch { keys: n_keys, rows });
    }
    let keys = key_strings(pickle, keys)?;
    let grouping = group_by_class(&keys)?;
    let raw = pickle.raw_data(embeddings).ok_or(LeoError::MissingData {
        array: "embeddings",
    })?;
    let st = strides(embeddings);
    let mut starts = Vec::with_capacity(grouping.counts.len());
    let mut next = 0usize;
    for &n in &grouping.counts {
        starts.push(next);
        next += n;
    }
    let mut data = vec![0f32; rows * dim];
    for (row, &class) in grouping.class_of_row.iter().enumerate() {
        let dst_row = starts[class];
        starts[class] += 1;
        let dst = &mut data[dst_row * dim..(dst_row + 1) * dim];
        float
            .gather(raw, row.saturating_mul(st[0]), st[1], dst)
            .ok_or(LeoError::MissingData {
                array: "embeddings",
            })?;
    }
    Ok(Classes {
        names: Some(grouping.names),
        counts: grouping.counts,
        dim,
        data,
    })
}

/// Classes in order of first appearance, their sizes, and the class of each row.
struct Grouping {
    names: Vec<String>,
    counts: Vec<usize>,
    class_of_row: Vec<usize>,
}

fn group_by_class(keys: &[Cow<'_, [u8]>]) -> Result<Grouping, LeoError> {
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut images: HashMap<&[u8], usize> = HashMap::with_capacity(keys.len());
    let mut grouping = Grouping {
        names: Vec::new(),
        counts: Vec::new(),
        class_of_row: Vec::with_capacity(keys.len()),
    };
    for (row, key) in keys.iter().enumerate() {
        let (class, image) = parse_key(key, row)?;
        if let Some(first) = images.insert(image, row) {
            return Err(LeoError::DuplicateImage {
                image: decode_name(image),
                first,
                row,
            });
        }
        let c = match index.entry(class) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                grouping.names.push(decode_name(class));
                grouping.counts.push(0);
                *e.insert(grouping.counts.len() - 1)
            }
        };
        grouping.counts[c] += 1;
        grouping.class_of_row.push(c);
    }
    Ok(grouping)
}
