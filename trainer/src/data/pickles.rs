//! `{split}_embeddings.pkl` files (DeepMind LEO's dicts or the AWGIM
//! repository's repacked arrays), read by the `leo` crate into a [`Split`].

use std::path::{Path, PathBuf};

use super::error::DataError;
use super::split::{numbered_class_names, Split};

/// Reads one split from a `{split}_embeddings.pkl` file with
/// [`leo::read_classes`] (`leo/README.md` lists the files it accepts and
/// refuses). The classes of an AWGIM repacked array are named
/// `"{split}-{index:04}"`.
pub fn read_pickle_split(path: &Path, split: &str) -> Result<Split, DataError> {
    // The file's bytes are dropped before the split is checked.
    let classes = leo::read_classes(&read_file(path)?).map_err(|source| DataError::Leo {
        path: path.to_path_buf(),
        source,
    })?;
    let names = classes
        .names
        .unwrap_or_else(|| numbered_class_names(split, classes.counts.len()));
    Split::new(
        split,
        path.display().to_string(),
        names,
        classes.dim,
        &classes.counts,
        classes.data,
    )
}

/// Reads a whole file into memory (once), mapping "not found" to its own error.
fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::NotFound {
            path: path.to_path_buf(),
        },
        _ => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// The paths of the three `{split}_embeddings.pkl` files under `root`.
pub(crate) fn pickle_paths(root: &Path) -> [PathBuf; 3] {
    ["train", "val", "test"].map(|s| root.join(format!("{s}_embeddings.pkl")))
}
