#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod float;
mod layout;
mod pickle;

pub use error::{LeoError, PickleError};
pub use float::FloatType;
pub use layout::{read_classes, Classes};
