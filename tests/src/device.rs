//! The firmware (`firmware/`) on QEMU's emulated Cortex-M boards: checking the tools are
//! installed, building the firmware for a board and a model with its task (the model file
//! and the support and query `.npy` files `trainer infer` takes), running it with a timeout,
//! reading its printed report, and measuring its ELF file.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use object::read::elf::{ElfFile32, SectionHeader as _};
use thiserror::Error;

/// The firmware's compilation target.
pub const TARGET: &str = "thumbv7em-none-eabihf";
/// How to install what the device tests need (the README's test command,
/// `scripts/test-all.sh`, does it).
pub const INSTALL_HINT: &str = "install with `rustup target add thumbv7em-none-eabihf` and \
    `sudo apt-get install -y --no-install-recommends qemu-system-arm`, or run \
    scripts/test-all.sh, which installs both";

/// An emulated board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Board {
    /// ARM MPS2 with a Cortex-M4F (`mps2-an386`).
    An386,
    /// ARM MPS2 with a Cortex-M7 (`mps2-an500`).
    An500,
    /// Netduino Plus 2: an STM32F405 (Cortex-M4F, 1 MiB flash, 128 KiB SRAM).
    Netduinoplus2,
}

impl Board {
    /// The two MPS2 boards, which run one binary (4 MiB of code and of RAM each).
    pub const MPS2: [Board; 2] = [Board::An386, Board::An500];
    /// Every board.
    pub const ALL: [Board; 3] = [Board::An386, Board::An500, Board::Netduinoplus2];

    /// QEMU's machine name.
    pub fn machine(self) -> &'static str {
        match self {
            Self::An386 => "mps2-an386",
            Self::An500 => "mps2-an500",
            Self::Netduinoplus2 => "netduinoplus2",
        }
    }

    /// The firmware's board feature (its memory map). The MPS2 boards share one.
    pub fn feature(self) -> &'static str {
        match self {
            Self::An386 | Self::An500 => "mps2-an386",
            Self::Netduinoplus2 => "netduinoplus2",
        }
    }

    /// The board's core.
    pub fn core(self) -> &'static str {
        match self {
            Self::An386 | Self::Netduinoplus2 => "Cortex-M4F",
            Self::An500 => "Cortex-M7",
        }
    }

    /// Instructions run in `ticks` SysTick ticks under `-icount shift=0`: QEMU advances
    /// virtual time 1 ns per instruction, and SysTick counts the core clock, 25 MHz on the
    /// MPS2 boards (40 instructions a tick, exact) and 168 MHz on the STM32F405 (1000/168
    /// instructions a tick, rounded).
    pub fn instructions(self, ticks: u64) -> u64 {
        match self {
            Self::An386 | Self::An500 => ticks * 40,
            Self::Netduinoplus2 => (ticks * 1000 + 84) / 168,
        }
    }
}

/// What went wrong preparing or running the firmware.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// A tool the device tests need is missing.
    #[error("{what} is missing: {INSTALL_HINT}")]
    Missing {
        /// What is missing.
        what: String,
    },
    /// A program could not be started.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// `cargo build` of the firmware failed.
    #[error("building the firmware ({board}) failed with {status}:\n{stderr}")]
    Build {
        /// The board feature.
        board: String,
        /// Cargo's exit status.
        status: ExitStatus,
        /// Cargo's messages.
        stderr: String,
    },
    /// QEMU ran past the time limit and was killed.
    #[error(
        "{machine} ran longer than {limit:?} and was killed; output so far:\n{stdout}{stderr}"
    )]
    Timeout {
        /// QEMU's machine name.
        machine: &'static str,
        /// The limit.
        limit: Duration,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A file could not be read, written or copied.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The firmware's ELF file could not be read.
    #[error("ELF file {path}: {source}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// Why.
        source: object::Error,
    },
    /// The firmware's output does not have the documented form.
    #[error("firmware output: {message} (line `{line}`)")]
    Output {
        /// The line.
        line: String,
        /// What is wrong with it.
        message: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DeviceError + '_ {
    move |source| DeviceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `qemu-system-arm` runs and the thumbv7em target's standard library is
/// installed; the error names the install commands.
pub fn check_prerequisites() -> Result<(), DeviceError> {
    let qemu = Command::new("qemu-system-arm")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    if !qemu.is_ok_and(|out| out.status.success()) {
        return Err(DeviceError::Missing {
            what: "qemu-system-arm".into(),
        });
    }
    let libdir = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", TARGET])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| DeviceError::Spawn {
            program: "rustc".into(),
            source,
        })?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&libdir.stdout).trim());
    let has_core = std::fs::read_dir(&libdir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|name| name.starts_with("libcore-"))
        })
    });
    if !has_core {
        return Err(DeviceError::Missing {
            what: format!("the Rust target {TARGET}"),
        });
    }
    Ok(())
}

/// The firmware crate's directory.
pub fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware")
}

/// Writes `bytes` to `path` unless it already holds exactly them, so the file's modification
/// time (which cargo's rebuild check uses) only changes with its contents.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), DeviceError> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    formats::write_atomic(path, bytes).map_err(io_error(path))
}

/// The files a firmware embeds: the model, and the task as `trainer infer` takes it.
#[derive(Clone, Copy, Debug)]
pub struct Embedded<'a> {
    /// The model file (`AWGIM_MODEL`).
    pub model: &'a Path,
    /// The support set, a `.npy` of `N K x D` or `N x K x D` (`AWGIM_SUPPORT`).
    pub support: &'a Path,
    /// The queries, a `.npy` of `M x D` (`AWGIM_QUERIES`).
    pub queries: &'a Path,
}

/// Builds the firmware (release) for `board` with the files `embedded`, in `target_dir`
/// (reused across calls, so rebuilds are incremental), and copies the ELF file to `elf`. The
/// sizes come from the model file; a model that cannot run or fit fails the build, and the
/// error holds the build script's message.
///
/// Builds sharing a target dir must not run concurrently: the ELF is copied from the target
/// dir's fixed output path.
pub fn build_firmware(
    board: Board,
    embedded: Embedded<'_>,
    target_dir: &Path,
    elf: &Path,
) -> Result<(), DeviceError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .current_dir(firmware_dir())
        .args([
            "build",
            "--release",
            "--no-default-features",
            "--features",
            board.feature(),
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .env("AWGIM_MODEL", embedded.model)
        .env("AWGIM_SUPPORT", embedded.support)
        .env("AWGIM_QUERIES", embedded.queries)
        .env_remove("AWGIM_MEMORY")
        // The firmware's own .cargo/config.toml sets the target and its linker flags; flags
        // meant for the host must not replace them.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| DeviceError::Spawn {
            program: cargo.to_string_lossy().into_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(DeviceError::Build {
            board: board.feature().into(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let built = target_dir.join(TARGET).join("release/firmware");
    if let Some(dir) = elf.parent() {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    std::fs::copy(&built, elf).map_err(io_error(&built))?;
    Ok(())
}

/// What a QEMU run printed and how it ended.
#[derive(Clone, Debug)]
pub struct QemuRun {
    /// The exit status (the firmware's semihosting exit code), `None` if killed by a signal.
    pub status: Option<i32>,
    /// Standard output (the firmware's report).
    pub stdout: String,
    /// Standard error (the firmware's error messages, and QEMU's).
    pub stderr: String,
    /// Host time the run took.
    pub elapsed: Duration,
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the capture; what was read so far is kept.
            let _ = pipe.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

fn wait_with_limit(child: &mut Child, limit: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the firmware ELF on `board` with semihosting and `-icount shift=0`; kills QEMU and
/// fails if it runs longer than `limit`.
pub fn run_qemu(board: Board, elf: &Path, limit: Duration) -> Result<QemuRun, DeviceError> {
    let started = Instant::now();
    let spawn_error = |source| DeviceError::Spawn {
        program: "qemu-system-arm".into(),
        source,
    };
    let mut child = Command::new("qemu-system-arm")
        .args([
            "-machine",
            board.machine(),
            "-nographic",
            "-monitor",
            "none",
        ])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=0", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_with_limit(&mut child, limit).map_err(spawn_error)?;
    if status.is_none() {
        // Already exited in between if this fails; either way it is reaped below.
        let _ = child.kill();
        let _ = child.wait();
    }
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    match status {
        Some(status) => Ok(QemuRun {
            status: status.code(),
            stdout,
            stderr,
            elapsed: started.elapsed(),
        }),
        None => Err(DeviceError::Timeout {
            machine: board.machine(),
            limit,
            stdout,
            stderr,
        }),
    }
}

/// One classified query of a [`Report`].
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// The predicted class.
    pub class: usize,
    /// SysTick ticks `classify` took.
    pub ticks: u64,
    /// Stack high-water mark of `classify`, in bytes.
    pub stack_bytes: u64,
    /// The logits, exactly (read from their bit patterns).
    pub logits: Vec<f32>,
}

/// Time and stack of one phase of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    /// SysTick ticks it took.
    pub ticks: u64,
    /// Its stack high-water mark in bytes, counted from the top of the stack.
    pub stack_bytes: u64,
}

/// A line `name ticks N stack_bytes S`.
fn phase(line: &str, name: &str) -> Result<Phase, DeviceError> {
    let mut words = line.split_whitespace();
    if words.next() != Some(name) {
        return Err(output_error(line, format!("expected `{name}`")));
    }
    let ticks = field(line, &mut words, "ticks")?;
    let stack_bytes = field(line, &mut words, "stack_bytes")?;
    if words.next().is_some() {
        return Err(output_error(line, "unexpected words"));
    }
    Ok(Phase { ticks, stack_bytes })
}

/// The firmware's printed report (its format is documented in `firmware/src/main.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The board feature the firmware was built for.
    pub board: String,
    /// The sizes as printed (`D, d, heads, N, K, G`).
    pub sizes: formats::Sizes,
    /// Bytes of the embedded model file.
    pub model_bytes: u64,
    /// Bytes of the engine workspace (a static).
    pub workspace_bytes: u64,
    /// `Model::load` (file checks, CRC, borrowing the weights).
    pub load: Phase,
    /// Enrollment: the support rows arriving one at a time, each encoded as it arrives.
    pub enroll: Phase,
    /// `prepare`, once the last shot is in.
    pub prepare: Phase,
    /// Every query, in order.
    pub queries: Vec<QueryResult>,
    /// The largest stack high-water mark of the phases, in bytes.
    pub stack_high_water_bytes: u64,
}

fn output_error(line: &str, message: impl Into<String>) -> DeviceError {
    DeviceError::Output {
        line: line.into(),
        message: message.into(),
    }
}

fn number<T: std::str::FromStr>(line: &str, word: Option<&str>) -> Result<T, DeviceError> {
    word.and_then(|w| w.parse().ok())
        .ok_or_else(|| output_error(line, "expected a number"))
}

/// `key value` at the start of the words, the value a number.
fn field<T: std::str::FromStr>(
    line: &str,
    words: &mut std::str::SplitWhitespace<'_>,
    key: &str,
) -> Result<T, DeviceError> {
    if words.next() != Some(key) {
        return Err(output_error(line, format!("expected `{key}`")));
    }
    number(line, words.next())
}

/// A line `key number`, where `key` may be several words.
fn keyed(line: &str, key: &str) -> Result<u64, DeviceError> {
    let mut words = line.split_whitespace();
    for part in key.split(' ') {
        if words.next() != Some(part) {
            return Err(output_error(line, format!("expected `{key}`")));
        }
    }
    let value = number(line, words.next())?;
    if words.next().is_some() {
        return Err(output_error(line, "unexpected words"));
    }
    Ok(value)
}

impl Report {
    /// Reads the report from the firmware's standard output; every documented line must be
    /// there, in order, ending with `done`. Logits are taken from their bit patterns and must
    /// equal their decimal form.
    pub fn parse(stdout: &str) -> Result<Self, DeviceError> {
        let mut lines = stdout.lines().filter(|l| !l.trim().is_empty());
        let mut next = |what: &str| {
            lines
                .next()
                .ok_or_else(|| output_error("", format!("ended before `{what}`")))
        };

        let line = next("awgim-firmware")?;
        let mut words = line.split_whitespace();
        if words.next() != Some("awgim-firmware") || words.next() != Some("board") {
            return Err(output_error(line, "expected `awgim-firmware board`"));
        }
        let board = words
            .next()
            .ok_or_else(|| output_error(line, "no board name"))?
            .to_string();
        let mut size = |key: &str| field::<usize>(line, &mut words, key);
        let sizes = formats::Sizes {
            D: size("D")?,
            d: size("d")?,
            h: size("heads")?,
            N: size("N")?,
            K: size("K")?,
            G: size("G")?,
        };
        let query_count: usize = field(line, &mut words, "queries")?;
        let ways = sizes.N;

        let model_bytes = keyed(next("model_bytes")?, "model_bytes")?;
        let workspace_bytes = keyed(next("workspace_bytes")?, "workspace_bytes")?;
        let load = phase(next("load")?, "load")?;
        let enroll = phase(next("enroll")?, "enroll")?;
        let prepare = phase(next("prepare")?, "prepare")?;

        let mut queries = Vec::with_capacity(query_count);
        for index in 0..query_count {
            let line = next("query")?;
            let mut words = line.split_whitespace();
            if field::<usize>(line, &mut words, "query")? != index {
                return Err(output_error(line, format!("expected query {index}")));
            }
            let class = field(line, &mut words, "class")?;
            let ticks = field(line, &mut words, "ticks")?;
            let stack_bytes = field(line, &mut words, "stack_bytes")?;
            if words.next() != Some("logits") {
                return Err(output_error(line, "expected `logits`"));
            }
            let mut logits = Vec::with_capacity(ways);
            for _ in 0..ways {
                let bits = words
                    .next()
                    .and_then(|w| u32::from_str_radix(w, 16).ok())
                    .ok_or_else(|| output_error(line, "expected a hexadecimal f32"))?;
                logits.push(f32::from_bits(bits));
            }
            if words.next() != Some("decimal") {
                return Err(output_error(line, "expected `decimal`"));
            }
            for &logit in &logits {
                let decimal: f32 = number(line, words.next())?;
                if decimal.to_bits() != logit.to_bits() {
                    return Err(output_error(line, "decimal and hexadecimal logits differ"));
                }
            }
            if words.next().is_some() || class >= ways {
                return Err(output_error(line, "unexpected words or class"));
            }
            queries.push(QueryResult {
                class,
                ticks,
                stack_bytes,
                logits,
            });
        }
        let stack_high_water_bytes =
            keyed(next("stack_high_water_bytes")?, "stack_high_water_bytes")?;
        let line = next("done")?;
        if line.trim() != "done" {
            return Err(output_error(line, "expected `done`"));
        }
        Ok(Self {
            board,
            sizes,
            model_bytes,
            workspace_bytes,
            load,
            enroll,
            prepare,
            queries,
            stack_high_water_bytes,
        })
    }
}

/// Memory of a firmware image, from its ELF section headers: what is programmed into flash
/// and what the program's statics occupy in RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfSizes {
    /// Bytes of the allocated sections with contents (vector table, code, read-only data
    /// including the embedded files, and the initial values of .data): the flash image.
    pub flash: u64,
    /// Bytes of the executable sections (code), part of `flash`.
    pub code: u64,
    /// Bytes of the writable allocated sections (.data, .bss, .uninit): static RAM.
    pub static_ram: u64,
}

impl ElfSizes {
    /// Reads the section headers of the ELF file at `path`.
    pub fn read(path: &Path) -> Result<Self, DeviceError> {
        use object::elf::{SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_NOBITS};
        let data = std::fs::read(path).map_err(io_error(path))?;
        let elf =
            ElfFile32::<object::Endianness>::parse(&*data).map_err(|source| DeviceError::Elf {
                path: path.to_path_buf(),
                source,
            })?;
        let endian = elf.endian();
        let mut sizes = Self {
            flash: 0,
            code: 0,
            static_ram: 0,
        };
        for header in elf.elf_section_table().iter() {
            let flags = header.sh_flags(endian);
            let size = u64::from(header.sh_size(endian));
            if flags & SHF_ALLOC == 0 {
                continue;
            }
            if header.sh_type(endian) != SHT_NOBITS {
                sizes.flash += size;
            }
            if flags & SHF_EXECINSTR != 0 {
                sizes.code += size;
            }
            if flags & SHF_WRITE != 0 {
                sizes.static_ram += size;
            }
        }
        Ok(sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
awgim-firmware board mps2-an386 D 64 d 32 heads 4 N 5 K 5 G 64 queries 2
model_bytes 1000
workspace_bytes 48000
load ticks 10 stack_bytes 4096
enroll ticks 5 stack_bytes 500
prepare ticks 20 stack_bytes 1000
query 0 class 1 ticks 30 stack_bytes 800 logits 3f800000 40000000 bf000000 00000000 80000000 decimal 1 2 -0.5 0 -0
query 1 class 0 ticks 31 stack_bytes 808 logits 3dcccccd 00000000 00000000 00000000 00000000 decimal 0.1 0 0 0 0
stack_high_water_bytes 4096
done
";

    #[test]
    fn parses_the_documented_report() {
        let report = Report::parse(OUTPUT).unwrap();
        assert_eq!(report.board, "mps2-an386");
        assert_eq!(report.sizes, formats::ModelConfig::edge(5).sizes());
        assert_eq!((report.model_bytes, report.workspace_bytes), (1000, 48000));
        assert_eq!(
            report.load,
            Phase {
                ticks: 10,
                stack_bytes: 4096
            }
        );
        assert_eq!(
            (report.enroll, report.prepare),
            (
                Phase {
                    ticks: 5,
                    stack_bytes: 500
                },
                Phase {
                    ticks: 20,
                    stack_bytes: 1000
                }
            )
        );
        assert_eq!(report.queries[1].stack_bytes, 808);
        assert_eq!(report.queries.len(), 2);
        assert_eq!(report.queries[0].logits, [1.0, 2.0, -0.5, 0.0, -0.0]);
        assert!(report.queries[0].logits[4].is_sign_negative());
        assert_eq!(report.queries[1].logits[0], 0.1f32);
        assert_eq!((report.queries[1].class, report.queries[1].ticks), (0, 31));
        assert_eq!(report.stack_high_water_bytes, 4096);
    }

    #[test]
    fn rejects_damaged_reports() {
        let cases = [
            // Truncated: no `done`.
            OUTPUT.replace("done\n", ""),
            // A query missing.
            OUTPUT.replace("queries 2", "queries 3"),
            // Decimal that is not the bit pattern's value.
            OUTPUT.replace("decimal 1 2", "decimal 1 3"),
            // A logit missing.
            OUTPUT.replace("40000000 bf000000", "40000000"),
            // Out-of-order query.
            OUTPUT.replace("query 1", "query 2"),
            // Class out of range.
            OUTPUT.replace("class 1", "class 5"),
            // A phase without its stack.
            OUTPUT.replace("ticks 20 stack_bytes 1000", "ticks 20"),
            // Not hexadecimal.
            OUTPUT.replace("3f800000", "3f80000g"),
        ];
        for case in cases {
            assert!(
                matches!(Report::parse(&case), Err(DeviceError::Output { .. })),
                "accepted:\n{case}"
            );
        }
    }
}
