//! The golden vectors of `tests/golden/` (see its README): an edge 5-way 5-shot inference
//! model file, a task file and the independent f64 reference's logits for its queries, all
//! generated from fixed seeds so any implementation can check itself against them and
//! `cargo run -p tests --bin make-golden` rewrites the same bytes.

use std::io;
use std::path::{Path, PathBuf};

use formats::{FormatError, ModelConfig};
use thiserror::Error;

use crate::random::{RandomModel, RandomTask};
use crate::reference::Reference;
use crate::task_file::{TaskFile, TaskFileError};

/// The golden configuration: edge sizes (D = 64, d = 32, 4 heads, G = 64), 5-way 5-shot.
pub const CONFIG: ModelConfig = ModelConfig::edge(5);
/// Seed of the weights and of the task.
pub const SEED: u64 = 2020;
/// Queries per class (the task has `N` times as many, shuffled).
pub const QUERIES_PER_CLASS: usize = 2;
/// Spread of a class's examples around its centre (see [`RandomTask::new`]).
pub const SPREAD: f32 = 0.5;

/// File name of the inference model file.
pub const MODEL_FILE: &str = "model.awgim";
/// File name of the task file (layout in [`crate::task_file`]).
pub const TASK_FILE: &str = "task.bin";
/// File name of the expected logits: `M x N` little-endian `f64`, row-major.
pub const LOGITS_FILE: &str = "logits.f64";

/// What can go wrong making, reading or writing the golden set.
#[derive(Debug, Error)]
pub enum GoldenError {
    /// A model file could not be written or read.
    #[error("model file: {0}")]
    Format(#[from] FormatError),
    /// A task file could not be written or read.
    #[error("task file: {0}")]
    Task(#[from] TaskFileError),
    /// The logits file is not a whole number of rows of `N` f64.
    #[error("logits file of {bytes} bytes is not a whole number of rows of {ways} f64")]
    LogitsLength {
        /// Bytes found.
        bytes: usize,
        /// `N`.
        ways: usize,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A seeded random model file (perturbed layer norms, see [`RandomModel::perturbed`]) and a
/// seeded task with `queries_per_class` queries per class: what the golden set and the device
/// tests are made of.
pub fn model_and_task(
    config: ModelConfig,
    seed: u64,
    queries_per_class: usize,
) -> Result<(Vec<u8>, TaskFile), FormatError> {
    let model = RandomModel::perturbed(config, seed).build()?;
    let task = RandomTask::new(&config, seed, queries_per_class, SPREAD);
    let task = TaskFile {
        feature_dim: config.feature_dim,
        ways: config.ways,
        shots: config.shots,
        support: task.support,
        queries: task.queries,
    };
    Ok((model, task))
}

/// The three files of the golden set, as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoldenSet {
    /// The inference model file.
    pub model: Vec<u8>,
    /// The task file.
    pub task: Vec<u8>,
    /// The reference logits, `M x N` little-endian f64.
    pub logits: Vec<u8>,
}

impl GoldenSet {
    /// Generates the set from the seeds above (deterministic: same bytes on every run).
    pub fn generate() -> Result<Self, GoldenError> {
        let (model, task) = model_and_task(CONFIG, SEED, QUERIES_PER_CLASS)?;
        let logits = Reference::from_file(&model)?.logits(&task.support, &task.queries);
        Ok(Self {
            model,
            task: task.encode()?,
            logits: encode_logits(&logits),
        })
    }

    /// The committed set: `tests/golden/` of this crate.
    pub fn committed_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
    }

    /// Reads the three files from `dir`.
    pub fn read(dir: &Path) -> Result<Self, GoldenError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| GoldenError::Io { path, source })
        };
        Ok(Self {
            model: read(MODEL_FILE)?,
            task: read(TASK_FILE)?,
            logits: read(LOGITS_FILE)?,
        })
    }

    /// Writes the three files into `dir` (each atomically), creating it if needed.
    pub fn write(&self, dir: &Path) -> Result<(), GoldenError> {
        std::fs::create_dir_all(dir).map_err(|source| GoldenError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for (name, bytes) in self.files() {
            let path = dir.join(name);
            formats::write_atomic(&path, bytes)
                .map_err(|source| GoldenError::Io { path, source })?;
        }
        Ok(())
    }

    /// `(file name, bytes)` of each file.
    pub fn files(&self) -> [(&'static str, &[u8]); 3] {
        [
            (MODEL_FILE, &self.model),
            (TASK_FILE, &self.task),
            (LOGITS_FILE, &self.logits),
        ]
    }

    /// The expected logits, one row of `N` per query.
    pub fn expected_logits(&self) -> Result<Vec<Vec<f64>>, GoldenError> {
        decode_logits(&self.logits, CONFIG.sizes().N)
    }
}

/// Logits rows as little-endian f64, row-major.
pub fn encode_logits(rows: &[Vec<f64>]) -> Vec<u8> {
    rows.iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// Rows of `ways` little-endian f64.
pub fn decode_logits(bytes: &[u8], ways: usize) -> Result<Vec<Vec<f64>>, GoldenError> {
    let row_bytes = ways * 8;
    if ways == 0 || bytes.len() % row_bytes != 0 {
        return Err(GoldenError::LogitsLength {
            bytes: bytes.len(),
            ways,
        });
    }
    Ok(bytes
        .chunks_exact(row_bytes)
        .map(|row| {
            row.chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_round_trip_and_length_check() {
        let rows = vec![vec![1.5, -0.0, f64::MIN_POSITIVE], vec![1e300, -2.0, 3.25]];
        let bytes = encode_logits(&rows);
        assert_eq!(bytes.len(), 48);
        assert_eq!(bytes[..8], 1.5f64.to_le_bytes());
        assert_eq!(decode_logits(&bytes, 3).unwrap(), rows);
        assert!(matches!(
            decode_logits(&bytes[..47], 3),
            Err(GoldenError::LogitsLength { bytes: 47, ways: 3 })
        ));
        assert!(matches!(
            decode_logits(&bytes, 0),
            Err(GoldenError::LogitsLength { .. })
        ));
    }
}
