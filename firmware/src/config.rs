//! The configuration chosen by the cargo feature (`edge1`, `edge5`, `paper1` or `paper5`): its
//! sizes, one of the engine's compiled configurations, and the engine types for them.
//! `build.rs` makes sure exactly one feature is enabled.

use formats::Sizes;

#[cfg(feature = "edge1")]
mod chosen {
    pub const NAME: &str = "edge1";
    pub const SIZES: formats::Sizes = engine::EDGE_1SHOT;
    pub const BATCH: usize = engine::EDGE_BATCH;
}
#[cfg(feature = "edge5")]
mod chosen {
    pub const NAME: &str = "edge5";
    pub const SIZES: formats::Sizes = engine::EDGE_5SHOT;
    pub const BATCH: usize = engine::EDGE_BATCH;
}
#[cfg(feature = "paper1")]
mod chosen {
    pub const NAME: &str = "paper1";
    pub const SIZES: formats::Sizes = engine::PAPER_1SHOT;
    pub const BATCH: usize = engine::PAPER_BATCH;
}
#[cfg(feature = "paper5")]
mod chosen {
    pub const NAME: &str = "paper5";
    pub const SIZES: formats::Sizes = engine::PAPER_5SHOT;
    pub const BATCH: usize = engine::PAPER_BATCH;
}

/// Name of the configuration (the feature).
pub const NAME: &str = chosen::NAME;
/// The configuration's sizes, as the model and task files must declare them.
pub const SIZES: Sizes = chosen::SIZES;
/// Features per row, `D`.
pub const D: usize = SIZES.D;
/// Support rows, `N K`.
pub const NK: usize = SIZES.N * SIZES.K;

/// The engine's model type for this configuration (the same type as the engine's alias, e.g.
/// `engine::Edge5Shot`).
pub type Model<'a> = engine::awgim_model!('a; SIZES);
/// The engine's workspace for this configuration (the same type as the engine's alias, e.g.
/// `engine::Edge5ShotWorkspace`).
pub type Workspace = engine::awgim_workspace!(SIZES; chosen::BATCH);
