//! `.npy` and `.npz` files holding `(classes, samples, D)` float arrays.
//!
//! The header is parsed by `npyz`; the data is then read once in bulk and
//! converted to `f32` (float32 or float64, either byte order, C or Fortran
//! order). Optional class names come from a 1-D string array (`U` or `S`).

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use leo::FloatType;
use npyz::npz::NpzArchive;
use npyz::{DType, Endianness, NpyFile, NpyHeader, Order, TypeChar};

use super::error::DataError;
use super::split::{numbered_class_names, Dataset, Split, SplitKind};

/// A `(classes, samples, D)` array converted to class-major `f32`.
struct ClassArray {
    classes: usize,
    samples: usize,
    dim: usize,
    data: Vec<f32>,
}

fn malformed(path: &Path, problem: String) -> DataError {
    DataError::Malformed {
        path: path.to_path_buf(),
        problem,
    }
}

fn open(path: &Path) -> Result<File, DataError> {
    File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::NotFound {
            path: path.to_path_buf(),
        },
        _ => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Largest header accepted (numpy's own reader refuses more than 10,000
/// bytes by default).
const MAX_HEADER_LEN: usize = 65_536;

/// Reads an `.npy` header. The preamble and the shape are checked here
/// before `npyz` parses the header, so that a corrupt length cannot make it
/// allocate gigabytes and absurd dimensions cannot overflow its arithmetic.
fn read_header(reader: &mut impl Read, path: &Path, name: &str) -> Result<NpyHeader, DataError> {
    let bad =
        |problem: String| malformed(path, format!("{name}: not a valid .npy array: {problem}"));
    let io = |e: std::io::Error| bad(format!("header: {e}"));
    let mut preamble = vec![0u8; 8];
    reader.read_exact(&mut preamble).map_err(io)?;
    if &preamble[..6] != b"\x93NUMPY" {
        return Err(bad("no NUMPY magic".into()));
    }
    let len_size = match preamble[6] {
        1 => 2,
        2 | 3 => 4,
        v => return Err(bad(format!("unsupported format version {v}"))),
    };
    let mut len_bytes = vec![0u8; len_size];
    reader.read_exact(&mut len_bytes).map_err(io)?;
    let header_len = len_bytes
        .iter()
        .rev()
        .fold(0usize, |n, &b| (n << 8) | usize::from(b));
    if header_len > MAX_HEADER_LEN {
        return Err(bad(format!("header of {header_len} bytes")));
    }
    let mut text = vec![0u8; header_len];
    reader.read_exact(&mut text).map_err(io)?;
    if shape_overflows(&text) {
        return Err(bad("shape does not fit in 64 bits".into()));
    }
    preamble.extend_from_slice(&len_bytes);
    preamble.extend_from_slice(&text);
    NpyHeader::from_reader(&preamble[..]).map_err(|e| bad(e.to_string()))
}

/// Whether the `'shape'` tuple of a header's text has dimensions whose
/// product (zeros skipped) overflows `u64`. Unparsable text is left to
/// `npyz` to reject.
fn shape_overflows(text: &[u8]) -> bool {
    let text = String::from_utf8_lossy(text);
    let Some(at) = text.find("'shape'").or_else(|| text.find("\"shape\"")) else {
        return false;
    };
    let rest = &text[at..];
    let (Some(open), Some(close)) = (rest.find('('), rest.find(')')) else {
        return false;
    };
    if close < open {
        return false;
    }
    let mut product = 1u64;
    for field in rest[open + 1..close].split(',') {
        let digits = field.trim().trim_end_matches('L');
        if digits.is_empty() {
            continue;
        }
        match digits.parse::<u64>() {
            Ok(0) => {}
            Ok(d) => match product.checked_mul(d) {
                Some(p) => product = p,
                None => return true,
            },
            Err(_) => return true,
        }
    }
    false
}

/// Reads one `.npy` stream holding a `(classes, samples, D)` float array.
fn read_class_array(
    mut reader: impl Read,
    path: &Path,
    name: &str,
) -> Result<ClassArray, DataError> {
    let header = read_header(&mut reader, path, name)?;
    let dtype = header.dtype();
    let float = match &dtype {
        DType::Plain(ts) if ts.type_char() == TypeChar::Float => {
            let size = usize::try_from(ts.size_field()).unwrap_or(0);
            match ts.endianness() {
                Endianness::Little => FloatType::new(size, false),
                Endianness::Big => FloatType::new(size, true),
                Endianness::Irrelevant => None,
            }
        }
        _ => None,
    }
    .ok_or_else(|| DataError::UnsupportedDtype {
        path: path.to_path_buf(),
        array: name.to_string(),
        dtype: dtype.descr(),
        expected: "float32 or float64",
    })?;
    let shape: Vec<usize> = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect();
    let bad_shape = || DataError::BadShape {
        path: path.to_path_buf(),
        array: name.to_string(),
        shape: shape.clone(),
        expected: "(classes, samples, features), all non-zero",
    };
    let [classes, samples, dim] = shape[..] else {
        return Err(bad_shape());
    };
    if classes == 0 || samples == 0 || dim == 0 {
        return Err(bad_shape());
    }
    let expected = classes
        .checked_mul(samples)
        .and_then(|n| n.checked_mul(dim))
        .and_then(|n| n.checked_mul(float.width()))
        .ok_or_else(bad_shape)?;
    let mut raw = Vec::new();
    reader
        .take((expected as u64).saturating_add(1))
        .read_to_end(&mut raw)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if raw.len() != expected {
        let what = if raw.len() < expected {
            "truncated"
        } else {
            "has trailing bytes"
        };
        return Err(malformed(
            path,
            format!(
                "{name}: data {what}: shape {shape:?} of {} needs {expected} bytes",
                dtype.descr()
            ),
        ));
    }
    let (row_stride, elem_stride) = match header.order() {
        Order::C => (dim, 1),
        Order::Fortran => (1, classes * samples),
    };
    let mut data = vec![0f32; classes * samples * dim];
    for (row, dst) in data.chunks_exact_mut(dim).enumerate() {
        // Fortran order: element (c, s, d) is at c + s * classes + d * classes * samples.
        let start = match header.order() {
            Order::C => row * row_stride,
            Order::Fortran => row / samples + (row % samples) * classes,
        };
        float
            .gather(&raw, start, elem_stride, dst)
            .ok_or_else(|| malformed(path, format!("{name}: data shorter than its shape")))?;
    }
    Ok(ClassArray {
        classes,
        samples,
        dim,
        data,
    })
}

/// Reads a 1-D string array of class names.
fn read_names(
    mut reader: impl Read,
    path: &Path,
    name: &str,
    classes: usize,
) -> Result<Vec<String>, DataError> {
    let header = read_header(&mut reader, path, name)?;
    let npy = NpyFile::with_header(header, reader);
    if npy.shape().len() != 1 {
        return Err(DataError::BadShape {
            path: path.to_path_buf(),
            array: name.to_string(),
            shape: npy.shape().iter().map(|&d| d as usize).collect(),
            expected: "(classes,)",
        });
    }
    let names: Vec<String> = npy
        .into_vec()
        .map_err(|e| malformed(path, format!("{name}: expected a string array: {e}")))?;
    if names.len() != classes {
        return Err(malformed(
            path,
            format!("{name}: {} names for {classes} classes", names.len()),
        ));
    }
    Ok(names)
}

fn into_split(
    array: ClassArray,
    names: Option<Vec<String>>,
    split: &str,
    origin: &Path,
) -> Result<Split, DataError> {
    let names = names.unwrap_or_else(|| numbered_class_names(split, array.classes));
    Split::new(
        split,
        origin.display().to_string(),
        names,
        array.dim,
        &vec![array.samples; array.classes],
        array.data,
    )
}

/// Reads one split from a `.npy` file holding a `(classes, samples, D)`
/// float array; classes are named `"{split}-{index}"` unless a sibling
/// `{split}_classes.npy` (1-D string array) exists.
pub fn read_npy_split(path: &Path, split: &str) -> Result<Split, DataError> {
    let array = read_class_array(BufReader::new(open(path)?), path, split)?;
    let names_path = path.with_file_name(format!("{split}_classes.npy"));
    let names = if names_path.is_file() {
        Some(read_names(
            BufReader::new(open(&names_path)?),
            &names_path,
            "class names",
            array.classes,
        )?)
    } else {
        None
    };
    into_split(array, names, split, path)
}

/// The paths of `{train,val,test}.npy` under `root`.
pub(crate) fn npy_paths(root: &Path) -> [PathBuf; 3] {
    SplitKind::ALL.map(|s| root.join(format!("{}.npy", s.name())))
}

/// Reads a data set from a directory holding `{train,val,test}.npy`.
pub fn read_npy_dir(root: &Path) -> Result<Dataset, DataError> {
    let [train, val, test] = npy_paths(root);
    Dataset::new(
        root.display().to_string(),
        read_npy_split(&train, "train")?,
        read_npy_split(&val, "val")?,
        read_npy_split(&test, "test")?,
    )
}

fn npz_member<'z, R: Read + Seek>(
    archive: &'z mut NpzArchive<R>,
    path: &Path,
    name: &str,
) -> Result<Option<impl Read + 'z>, DataError> {
    if !archive.array_names().any(|n| n == name) {
        return Ok(None);
    }
    archive
        .zip_archive()
        .by_name(&format!("{name}.npy"))
        .map(Some)
        .map_err(|e| malformed(path, format!("{name}: {e}")))
}

/// Reads a data set from a `.npz` archive with arrays `train`, `val`,
/// `test` (each `(classes, samples, D)`, float32 or float64) and optional
/// 1-D string arrays `train_classes`, `val_classes`, `test_classes`.
pub fn read_npz(path: &Path) -> Result<Dataset, DataError> {
    let mut archive = NpzArchive::new(BufReader::new(open(path)?))
        .map_err(|e| malformed(path, format!("not a valid .npz archive: {e}")))?;
    let mut splits = Vec::with_capacity(3);
    for kind in SplitKind::ALL {
        let name = kind.name();
        let member =
            npz_member(&mut archive, path, name)?.ok_or_else(|| DataError::MissingArray {
                path: path.to_path_buf(),
                name: name.to_string(),
            })?;
        let array = read_class_array(member, path, name)?;
        let names_key = format!("{name}_classes");
        let names = match npz_member(&mut archive, path, &names_key)? {
            Some(member) => Some(read_names(member, path, &names_key, array.classes)?),
            None => None,
        };
        splits.push(into_split(array, names, name, path)?);
    }
    let [train, val, test]: [Split; 3] = splits
        .try_into()
        .map_err(|_| malformed(path, "expected three splits".to_string()))?;
    Dataset::new(path.display().to_string(), train, val, test)
}
