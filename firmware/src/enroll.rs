//! Run-time enrollment: the support set arrives one labelled row at a time, as a sensor
//! pipeline delivers feature vectors, and is complete when every class has its `K` shots.
//!
//! The rows are kept in a caller's buffer (a `static`, `N K D` f32) in the class-major order
//! `prepare` takes: shot `k` of class `i` is row `i K + k`, whatever order they arrive in.

use core::fmt;

use crate::config::{D, K, N, NK};

/// Why a row was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrollError {
    /// The label is not a class of this model.
    Class {
        /// The label given.
        class: usize,
    },
    /// The class already has its `K` shots.
    Full {
        /// The class.
        class: usize,
    },
}

impl fmt::Display for EnrollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Class { class } => write!(f, "class {class}, the model has {N} classes"),
            Self::Full { class } => write!(f, "class {class} already has its {K} shots"),
        }
    }
}

/// The support set being collected.
pub struct Enrollment<'b> {
    rows: &'b mut [[f32; D]; NK],
    /// Shots received per class.
    shots: [usize; N],
}

impl<'b> Enrollment<'b> {
    /// An empty support set over `rows`.
    pub fn new(rows: &'b mut [[f32; D]; NK]) -> Self {
        Self {
            rows,
            shots: [0; N],
        }
    }

    /// Stores one row of class `class`; returns whether the set is now complete.
    pub fn push(&mut self, class: usize, features: &[f32; D]) -> Result<bool, EnrollError> {
        let shots = self
            .shots
            .get_mut(class)
            .ok_or(EnrollError::Class { class })?;
        if *shots == K {
            return Err(EnrollError::Full { class });
        }
        if let Some(row) = self.rows.get_mut(class * K + *shots) {
            *row = *features;
        }
        *shots += 1;
        Ok(self.shots.iter().all(|&s| s == K))
    }

    /// The complete support set (class-major), or `None` while a class lacks shots.
    pub fn support(&self) -> Option<&[[f32; D]; NK]> {
        self.shots.iter().all(|&s| s == K).then_some(&*self.rows)
    }
}
