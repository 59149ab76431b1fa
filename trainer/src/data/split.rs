//! The in-memory data set: splits of feature vectors grouped by class.

use std::collections::HashMap;
use std::fmt;

use super::error::DataError;

/// One of the three disjoint class sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SplitKind {
    /// Meta-train classes.
    Train,
    /// Meta-validation classes.
    Val,
    /// Meta-test classes.
    Test,
}

impl SplitKind {
    /// The three splits in order.
    pub const ALL: [SplitKind; 3] = [SplitKind::Train, SplitKind::Val, SplitKind::Test];

    /// `"train"`, `"val"` or `"test"`, as in LEO's file names.
    pub fn name(self) -> &'static str {
        match self {
            SplitKind::Train => "train",
            SplitKind::Val => "val",
            SplitKind::Test => "test",
        }
    }
}

impl fmt::Display for SplitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Feature vectors of one split, grouped by class: the examples of class
/// `c` are rows `offsets[c]..offsets[c + 1]` of one contiguous row-major
/// `f32` buffer of width [`Split::dim`]. Classes may have different counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    name: String,
    origin: String,
    class_names: Vec<String>,
    dim: usize,
    offsets: Vec<usize>,
    data: Vec<f32>,
}

impl Split {
    /// Builds a split from class-major data: class `c` has `counts[c]`
    /// consecutive rows of `dim` values. `origin` names where it came from
    /// (a file path or a synthetic spec) for error messages. Refuses empty
    /// splits, empty classes, repeated class names, a buffer of the wrong
    /// length and non-finite values.
    pub fn new(
        name: impl Into<String>,
        origin: impl Into<String>,
        class_names: Vec<String>,
        dim: usize,
        counts: &[usize],
        data: Vec<f32>,
    ) -> Result<Split, DataError> {
        let name = name.into();
        let origin = origin.into();
        let invalid = |problem: String| DataError::InvalidSplit {
            origin: origin.clone(),
            split: name.clone(),
            problem,
        };
        if dim == 0 {
            return Err(invalid("feature dimension is 0".into()));
        }
        if counts.is_empty() {
            return Err(invalid("no classes".into()));
        }
        if class_names.len() != counts.len() {
            return Err(invalid(format!(
                "{} class names for {} classes",
                class_names.len(),
                counts.len()
            )));
        }
        let mut seen = HashMap::with_capacity(class_names.len());
        for (c, class) in class_names.iter().enumerate() {
            if let Some(first) = seen.insert(class.as_str(), c) {
                return Err(invalid(format!(
                    "class {class:?} listed twice (classes {first} and {c})"
                )));
            }
        }
        let mut offsets = Vec::with_capacity(counts.len() + 1);
        offsets.push(0usize);
        for (c, &n) in counts.iter().enumerate() {
            if n == 0 {
                return Err(invalid(format!(
                    "class {:?} has no examples",
                    class_names[c]
                )));
            }
            let next = offsets[c]
                .checked_add(n)
                .ok_or_else(|| invalid("example count overflows".into()))?;
            offsets.push(next);
        }
        let rows = offsets[counts.len()];
        if rows.checked_mul(dim) != Some(data.len()) {
            return Err(invalid(format!(
                "{} values for {rows} examples of dimension {dim}",
                data.len()
            )));
        }
        // Chunked so the common all-finite case vectorises.
        let bad_chunk = data
            .chunks(4096)
            .position(|chunk| !chunk.iter().fold(true, |ok, v| ok & v.is_finite()));
        let first_bad = bad_chunk.and_then(|c| {
            let start = c * 4096;
            data[start..]
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| start + i)
        });
        if let Some(i) = first_bad {
            let row = i / dim;
            let class = offsets.partition_point(|&o| o <= row) - 1;
            return Err(DataError::NonFinite {
                origin,
                split: name,
                class: class_names[class].clone(),
                example: row - offsets[class],
            });
        }
        Ok(Split {
            name,
            origin,
            class_names,
            dim,
            offsets,
            data,
        })
    }

    /// The split's name (`"train"`, `"val"`, `"test"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the split came from (file path or synthetic spec).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Feature dimension D.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Class names in order (LEO: order of first appearance in the file).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Total number of examples.
    pub fn num_examples(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Number of examples of class `class` (0 if out of range).
    pub fn class_len(&self, class: usize) -> usize {
        self.class_rows(class).map_or(0, |(a, b)| b - a)
    }

    /// First and one-past-last row of class `class`.
    fn class_rows(&self, class: usize) -> Option<(usize, usize)> {
        let end = *self.offsets.get(class.checked_add(1)?)?;
        Some((self.offsets[class], end))
    }

    /// The smallest number of examples of any class.
    pub fn min_class_len(&self) -> usize {
        (0..self.num_classes())
            .map(|c| self.class_len(c))
            .min()
            .unwrap_or(0)
    }

    /// The examples of class `class`, row-major (`class_len * dim` values);
    /// empty if out of range.
    pub fn class_data(&self, class: usize) -> &[f32] {
        match self.class_rows(class) {
            Some((a, b)) => &self.data[a * self.dim..b * self.dim],
            None => &[],
        }
    }

    /// Example `index` of class `class`; `None` if out of range.
    pub fn example(&self, class: usize, index: usize) -> Option<&[f32]> {
        let start = index.checked_mul(self.dim)?;
        self.class_data(class)
            .get(start..start.checked_add(self.dim)?)
    }

    /// All examples, class-major, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The mean of every example of the split, per feature (accumulated in
    /// f64): the centre `trainer` subtracts before normalising features.
    pub fn mean(&self) -> Vec<f32> {
        let mut sum = vec![0f64; self.dim];
        for row in self.data.chunks_exact(self.dim.max(1)) {
            sum.iter_mut().zip(row).for_each(|(s, &x)| *s += x as f64);
        }
        let n = (self.data.len() / self.dim.max(1)).max(1) as f64;
        sum.into_iter().map(|s| (s / n) as f32).collect()
    }

    /// Checks that the split can serve `n_way`-way episodes with
    /// `per_class` = K + Q distinct examples per class.
    pub fn check_episodes(&self, n_way: usize, per_class: usize) -> Result<(), DataError> {
        if self.num_classes() < n_way {
            return Err(DataError::TooFewClasses {
                origin: self.origin.clone(),
                split: self.name.clone(),
                classes: self.num_classes(),
                n_way,
            });
        }
        for c in 0..self.num_classes() {
            if self.class_len(c) < per_class {
                return Err(DataError::TooFewExamples {
                    origin: self.origin.clone(),
                    split: self.name.clone(),
                    class: self.class_names[c].clone(),
                    have: self.class_len(c),
                    need: per_class,
                });
            }
        }
        Ok(())
    }
}

/// Names of classes a file does not name: `"{split}-{index:04}"`.
pub(crate) fn numbered_class_names(split: &str, classes: usize) -> Vec<String> {
    (0..classes).map(|c| format!("{split}-{c:04}")).collect()
}

/// A data set: meta-train, meta-val and meta-test splits of one feature
/// dimension with disjoint class names.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    name: String,
    train: Split,
    val: Split,
    test: Split,
}

impl Dataset {
    /// Assembles a data set; refuses splits whose dimensions differ or that
    /// share a class name.
    pub fn new(
        name: impl Into<String>,
        train: Split,
        val: Split,
        test: Split,
    ) -> Result<Dataset, DataError> {
        let name = name.into();
        for other in [&val, &test] {
            if other.dim() != train.dim() {
                return Err(DataError::SplitDimMismatch {
                    origin: other.origin().to_string(),
                    split: other.name().to_string(),
                    dim: other.dim(),
                    other: train.name().to_string(),
                    other_dim: train.dim(),
                });
            }
        }
        let mut owner: HashMap<&str, &str> = HashMap::new();
        for split in [&train, &val, &test] {
            for class in split.class_names() {
                if let Some(first) = owner.insert(class, split.name()) {
                    return Err(DataError::SharedClass {
                        origin: name.clone(),
                        class: class.clone(),
                        first: first.to_string(),
                        second: split.name().to_string(),
                    });
                }
            }
        }
        Ok(Dataset {
            name,
            train,
            val,
            test,
        })
    }

    /// The data set's name (its path, or the synthetic spec).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Feature dimension D (the same in every split).
    pub fn dim(&self) -> usize {
        self.train.dim()
    }

    /// One split.
    pub fn split(&self, kind: SplitKind) -> &Split {
        match kind {
            SplitKind::Train => &self.train,
            SplitKind::Val => &self.val,
            SplitKind::Test => &self.test,
        }
    }

    /// Refuses a data set whose feature dimension is not `dim` (e.g. a model
    /// built for 640-dimensional features).
    pub fn require_dim(&self, dim: usize) -> Result<(), DataError> {
        if self.dim() == dim {
            Ok(())
        } else {
            Err(DataError::WrongDim {
                origin: self.name.clone(),
                dim: self.dim(),
                required: dim,
            })
        }
    }

    /// Meta-train and meta-val classes together, as one split named
    /// `"train+val"`: what the final model of the paper's protocol trains on
    /// (`trainer --train-on-val`).
    pub fn train_and_val(&self) -> Result<Split, DataError> {
        let (train, val) = (&self.train, &self.val);
        let counts: Vec<usize> = [train, val]
            .iter()
            .flat_map(|s| (0..s.num_classes()).map(|c| s.class_len(c)))
            .collect();
        let names = [train, val]
            .iter()
            .flat_map(|s| s.class_names().iter().cloned())
            .collect();
        let data = [train.data(), val.data()].concat();
        Split::new(
            "train+val",
            format!("{} + {}", train.origin(), val.origin()),
            names,
            self.dim(),
            &counts,
            data,
        )
    }

    /// Checks, before any training starts, that every split has at least
    /// `n_way` classes and every class at least `k_shot + n_query` examples.
    pub fn check_episodes(
        &self,
        n_way: usize,
        k_shot: usize,
        n_query: usize,
    ) -> Result<(), DataError> {
        if n_way == 0 || k_shot == 0 {
            return Err(DataError::InvalidSettings(format!(
                "{n_way}-way {k_shot}-shot episodes need N >= 1 and K >= 1"
            )));
        }
        let per_class = k_shot
            .checked_add(n_query)
            .ok_or_else(|| DataError::InvalidSettings("K + Q overflows".into()))?;
        SplitKind::ALL
            .iter()
            .try_for_each(|&kind| self.split(kind).check_episodes(n_way, per_class))
    }
}
