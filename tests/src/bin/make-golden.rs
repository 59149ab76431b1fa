//! Writes the golden vectors (see `tests/golden/README.md`) into `tests/golden/`, or into the
//! directory given as the only argument. Deterministic: the same bytes on every run, which
//! `tests/tests/golden.rs` checks against the committed files.
//!
//! `cargo run -p tests --release --bin make-golden [DIR]`

use std::path::PathBuf;
use std::process::ExitCode;

use tests::golden::GoldenSet;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(GoldenSet::committed_dir);
    if args.next().is_some() {
        eprintln!("usage: make-golden [DIR]   (default: tests/golden)");
        return ExitCode::from(2);
    }
    let result = GoldenSet::generate().and_then(|set| set.write(&dir).map(|()| set));
    match result {
        Ok(set) => {
            for (name, bytes) in set.files() {
                println!("{} ({} bytes)", dir.join(name).display(), bytes.len());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("make-golden: {e}");
            ExitCode::FAILURE
        }
    }
}
