//! Data for the AWGIM trainer: feature vectors grouped by class, split into
//! disjoint meta-train / meta-val / meta-test class sets, and N-way K-shot
//! episodes drawn from one split at a time.
//!
//! # Layouts ([`load_path`] / [`DataSource::Path`])
//! - **pickles**: a directory with `train_embeddings.pkl`,
//!   `val_embeddings.pkl`, `test_embeddings.pkl` (e.g.
//!   `{root}/miniImageNet/center`), each a DeepMind LEO dict or an AWGIM
//!   repacked `(classes, samples, D)` array, read by the `leo` crate:
//!   `leo/README.md` lists the pickles it accepts and the errors it gives
//!   ([`DataError::Leo`]). A repacked array's classes are named
//!   `"{split}-{index:04}"`.
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
mod load;
mod npy;
mod pickles;
mod split;
mod synthetic;

pub use episodes::{ncm_accuracy, EpisodeBatch, EpisodeSampler, EpisodeSpec, Metric};
pub use error::DataError;
pub use load::{detect_layout, load_path, DataSource, Layout};
pub use npy::{read_npy_dir, read_npy_split, read_npz};
pub use pickles::read_pickle_split;
pub use split::{Dataset, Split, SplitKind};
pub use synthetic::{SyntheticSpec, CLASS_SPACE_DIM, WARP_WIDTH};
