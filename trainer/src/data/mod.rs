//! Data for the AWGIM trainer: feature vectors grouped by class, split into
//! disjoint meta-train / meta-val / meta-test class sets, and N-way K-shot
//! episodes drawn from one split at a time.
//!
//! # Layouts ([`load_path`] / [`DataSource::Path`])
//! - **DeepMind LEO**: a directory with `train_embeddings.pkl`,
//!   `val_embeddings.pkl`, `test_embeddings.pkl` (e.g.
//!   `{root}/miniImageNet/center`). Each is a pickle (protocol 0 to 5, as
//!   Python 2 or Python 3 writes it; numpy 1 or 2) of a dict with
//!   `"embeddings"` (examples, D) float32/float64, C or Fortran order, either
//!   byte order, and `"keys"`, a 1-D array of strings `"<x>-<class>-<image>"`;
//!   `"labels"` is ignored. Rows are grouped by the class field, classes in
//!   order of first appearance, rows in file order. A key whose image file
//!   does not start with `"<class>_"`, a repeated image file, or a key
//!   without exactly two `-` is refused ([`DataError::ClassMismatch`],
//!   [`DataError::DuplicateImage`], [`DataError::BadKey`]).
//! - **AWGIM repacked**: the same file names, each a pickle of one ndarray
//!   `(classes, samples, D)` (what the AWGIM repository's loader reads);
//!   classes are named `"{split}-{index:04}"`. The top-level object decides
//!   per file.
//! - **npy**: a directory with `train.npy`, `val.npy`, `test.npy`, each
//!   `(classes, samples, D)` float32/float64, and optional
//!   `{split}_classes.npy` 1-D string arrays of class names.
//! - **npz**: one `.npz` file with arrays `train`, `val`, `test`, each
//!   `(classes, samples, D)`, and optional string arrays `train_classes`,
//!   `val_classes`, `test_classes`.
//!
//! Without a path the trainer uses the [`SyntheticSpec`] data set.
#![warn(missing_docs)]

mod episodes;
mod error;
mod float;
mod leo;
mod load;
mod npy;
mod pickle;
mod split;
mod synthetic;

pub use episodes::{ncm_accuracy, EpisodeBatch, EpisodeSampler, EpisodeSpec, Metric};
pub use error::{DataError, PickleError};
pub use leo::{read_pickle_split, read_pickle_split_bytes};
pub use load::{detect_layout, load_path, DataSource, Layout};
pub use npy::{read_npy_dir, read_npy_split, read_npz};
pub use split::{Dataset, Split, SplitKind};
pub use synthetic::{SyntheticSpec, HIDDEN, LATENT};
