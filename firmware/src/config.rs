//! The configuration chosen by the cargo feature (`edge1`, `edge5`, `paper1` or `paper5`): its
//! sizes, taken from `formats::ModelConfig`, and the engine types compiled for them. `build.rs`
//! makes sure exactly one feature is enabled.

use formats::ModelConfig;

#[cfg(feature = "edge1")]
mod chosen {
    pub const NAME: &str = "edge1";
    pub const CONFIG: formats::ModelConfig = formats::ModelConfig::edge(1);
    pub const BATCH: usize = engine::EDGE_BATCH;
}
#[cfg(feature = "edge5")]
mod chosen {
    pub const NAME: &str = "edge5";
    pub const CONFIG: formats::ModelConfig = formats::ModelConfig::edge(5);
    pub const BATCH: usize = engine::EDGE_BATCH;
}
#[cfg(feature = "paper1")]
mod chosen {
    pub const NAME: &str = "paper1";
    pub const CONFIG: formats::ModelConfig = formats::ModelConfig::paper(1);
    pub const BATCH: usize = engine::PAPER_BATCH;
}
#[cfg(feature = "paper5")]
mod chosen {
    pub const NAME: &str = "paper5";
    pub const CONFIG: formats::ModelConfig = formats::ModelConfig::paper(5);
    pub const BATCH: usize = engine::PAPER_BATCH;
}

/// Name of the configuration (the feature).
pub const NAME: &str = chosen::NAME;
/// The configuration's sizes, as the model file must declare them.
pub const CONFIG: ModelConfig = chosen::CONFIG;
/// Feature dimension `D`.
pub const FEATURES: usize = CONFIG.feature_dim as usize;
/// Latent dimension `d`.
pub const LATENT: usize = CONFIG.latent_dim as usize;
/// Attention heads `h`.
pub const HEADS: usize = CONFIG.heads as usize;
/// Ways `N`.
pub const WAYS: usize = CONFIG.ways as usize;
/// Shots `K`.
pub const SHOTS: usize = CONFIG.shots as usize;
/// Generator hidden width `G`.
pub const HIDDEN: usize = CONFIG.generator_hidden as usize;
/// Support rows `N * K`.
pub const SUPPORT_ROWS: usize = WAYS * SHOTS;

/// The engine's model type for this configuration.
pub type Model<'a> = engine::awgim_model!('a; FEATURES, LATENT, HEADS, WAYS, SHOTS, HIDDEN);
/// The engine's workspace for this configuration (the same type as the engine's alias, e.g.
/// `engine::Edge5ShotWorkspace`).
pub type Workspace =
    engine::awgim_workspace!(FEATURES, LATENT, HEADS, WAYS, SHOTS, HIDDEN; chosen::BATCH);
