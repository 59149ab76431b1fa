//! Shared test support: an independent f64 reference of AWGIM's evaluation path, seeded random
//! model files and tasks for any configuration, the task file the firmware embeds, the golden
//! vectors, and running the firmware on emulated Cortex-M boards.
#![deny(missing_docs)]
// Sizes are AWGIM.md's letters (`D` and `d` are different sizes), as locals and as the
// engine's const parameters.
#![allow(non_snake_case, non_upper_case_globals)]

pub mod device;
pub mod fuzzing;
pub mod golden;
pub mod random;
pub mod reference;
pub mod task_file;
