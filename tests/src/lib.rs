//! Shared test support: an independent f64 reference of AWGIM's evaluation path, seeded random
//! model files and tasks for any configuration, the task file the firmware embeds, the golden
//! vectors, and running the firmware on emulated Cortex-M boards.
#![deny(missing_docs)]

pub mod device;
pub mod fuzzing;
pub mod golden;
pub mod random;
pub mod reference;
pub mod task_file;
