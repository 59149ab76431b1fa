//! Build-time choices: the linker's memory map, the configuration feature, and the model and
//! task files to embed.
//!
//! `AWGIM_MODEL` and `AWGIM_TASK` name the inference model file and the task file (absolute, or
//! relative to this directory). Without them the `edge5` configuration embeds the golden
//! vectors of `tests/golden/`; the other configurations need both variables.

use std::env;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// A build failure, shown to the user as its message.
struct BuildError(String);

impl fmt::Debug for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: fmt::Display> From<E> for BuildError {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// The configuration features, exactly one of which must be enabled.
const CONFIGS: [&str; 4] = ["edge1", "edge5", "paper1", "paper5"];

/// The golden vectors (tests/golden/README.md), embedded by default in the edge5 configuration.
const GOLDEN_MODEL: &str = "../tests/golden/model.awgim";
const GOLDEN_TASK: &str = "../tests/golden/task.bin";

fn main() -> Result<(), BuildError> {
    // Put memory.x where the linker (cortex-m-rt's link.x) finds it.
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?);
    fs::copy("memory.x", out.join("memory.x"))?;
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    let enabled: Vec<&str> = CONFIGS
        .into_iter()
        .filter(|c| env::var_os(format!("CARGO_FEATURE_{}", c.to_uppercase())).is_some())
        .collect();
    let [config] = enabled[..] else {
        return Err(format!(
            "enable exactly one configuration feature of {CONFIGS:?} (found {enabled:?}); \
             for another than the default: --no-default-features --features <config>"
        )
        .into());
    };
    embed(
        "AWGIM_MODEL",
        "the inference model file",
        config,
        GOLDEN_MODEL,
    )?;
    embed("AWGIM_TASK", "the task file", config, GOLDEN_TASK)?;
    Ok(())
}

/// Resolves the file named by the environment variable `var` (or the golden default for
/// edge5) and hands its absolute path to the crate as `<var>_FILE` for `include_bytes!`.
fn embed(var: &str, what: &str, config: &str, golden: &str) -> Result<(), BuildError> {
    println!("cargo:rerun-if-env-changed={var}");
    let path = match env::var_os(var) {
        Some(path) => PathBuf::from(path),
        None if config == "edge5" => PathBuf::from(golden),
        None => {
            return Err(format!(
                "set {var} to {what} of the {config} configuration (absolute, or relative to \
                 the firmware directory)"
            )
            .into())
        }
    };
    let path = fs::canonicalize(&path)
        .map_err(|e| format!("{var}: cannot open {}: {e}", Path::new(&path).display()))?;
    let text = path
        .to_str()
        .ok_or_else(|| format!("{var}: the path {} is not UTF-8", path.display()))?;
    println!("cargo:rerun-if-changed={text}");
    println!("cargo:rustc-env={var}_FILE={text}");
    Ok(())
}
