//! The loader entry point: a path (layout detected) or the synthetic spec.

use std::path::{Path, PathBuf};

use super::error::DataError;
use super::npy::{npy_paths, read_npy_dir, read_npz};
use super::pickles::{pickle_paths, read_pickle_split};
use super::split::Dataset;
use super::synthetic::SyntheticSpec;

/// Where the trainer's data comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// The built-in synthetic data set.
    Synthetic(SyntheticSpec),
    /// Files on disk; the layout is detected by [`detect_layout`].
    Path(PathBuf),
}

impl Default for DataSource {
    /// The synthetic data set with its default spec.
    fn default() -> Self {
        DataSource::Synthetic(SyntheticSpec::default())
    }
}

impl DataSource {
    /// Loads (or generates) the data set.
    pub fn load(&self) -> Result<Dataset, DataError> {
        match self {
            DataSource::Synthetic(spec) => spec.generate(),
            DataSource::Path(path) => load_path(path),
        }
    }
}

/// The on-disk layouts [`load_path`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A directory with `{train,val,test}_embeddings.pkl`: LEO dicts or
    /// AWGIM-style `(classes, samples, D)` arrays (decided per file).
    Pickles,
    /// A directory with `{train,val,test}.npy`, each `(classes, samples, D)`.
    NpyDir,
    /// A `.npz` archive with arrays `train`, `val`, `test`.
    Npz,
}

/// Detects the layout at `path`:
/// - a file whose name ends in `.npz` is [`Layout::Npz`];
/// - a directory holding any of `{train,val,test}_embeddings.pkl` is
///   [`Layout::Pickles`] (a missing one of the three is then reported);
/// - else a directory holding any of `{train,val,test}.npy` is
///   [`Layout::NpyDir`];
/// - anything else is an [`DataError::UnknownLayout`] whose hint lists
///   subdirectories that do hold LEO files (e.g. `miniImageNet/center`).
pub fn detect_layout(path: &Path) -> Result<Layout, DataError> {
    if !path.exists() {
        return Err(DataError::NotFound {
            path: path.to_path_buf(),
        });
    }
    if path.is_file() {
        let is_npz = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npz"));
        return if is_npz {
            Ok(Layout::Npz)
        } else {
            Err(DataError::UnknownLayout {
                path: path.to_path_buf(),
                hint: "a data file must be a .npz archive with arrays train, val, test; \
                       for .pkl or .npy files give the directory that holds them"
                    .into(),
            })
        };
    }
    if pickle_paths(path).iter().any(|p| p.is_file()) {
        return Ok(Layout::Pickles);
    }
    if npy_paths(path).iter().any(|p| p.is_file()) {
        return Ok(Layout::NpyDir);
    }
    let found = leo_dirs_below(path);
    let hint = if found.is_empty() {
        "expected {train,val,test}_embeddings.pkl or {train,val,test}.npy in this directory, or a .npz file"
            .to_string()
    } else {
        format!(
            "no embedding files here, but LEO files were found in: {}",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(DataError::UnknownLayout {
        path: path.to_path_buf(),
        hint,
    })
}

/// Subdirectories up to two levels below `root` holding `train_embeddings.pkl`
/// (LEO's download has `{miniImageNet,tieredImageNet}/{center,multiview}`).
fn leo_dirs_below(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let subdirs = |dir: &Path| -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs
    };
    for level1 in subdirs(root) {
        for dir in std::iter::once(level1.clone()).chain(subdirs(&level1)) {
            if dir.join("train_embeddings.pkl").is_file() {
                found.push(dir);
            }
        }
    }
    found
}

/// Loads a data set from `path`, detecting its layout with
/// [`detect_layout`]. The data set is named after the path.
pub fn load_path(path: &Path) -> Result<Dataset, DataError> {
    match detect_layout(path)? {
        Layout::Npz => read_npz(path),
        Layout::NpyDir => read_npy_dir(path),
        Layout::Pickles => {
            let [train, val, test] = pickle_paths(path);
            Dataset::new(
                path.display().to_string(),
                read_pickle_split(&train, "train")?,
                read_pickle_split(&val, "val")?,
                read_pickle_split(&test, "test")?,
            )
        }
    }
}
