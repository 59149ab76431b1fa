//! The AWGIM engine on a Cortex-M4F/M7.
//!
//! Built for the model and task that `build.rs` embeds (`AWGIM_MODEL`, `AWGIM_SUPPORT`,
//! `AWGIM_QUERIES`; the sizes come from the model's header, see README.md): loads the model
//! in place from flash, enrolls the support set one labelled row at a time as a sensor would
//! deliver it, prepares when the last shot is in, classifies every query one at a time and
//! prints, over semihosting:
//!
//! ```text
//! awgim-firmware board mps2-an386 D 64 d 32 heads 4 N 5 K 5 G 64 queries 10
//! model_bytes 149636
//! workspace_bytes 29404
//! load ticks 34709 stack_bytes 5396
//! enroll ticks 3744 stack_bytes 2616
//! prepare ticks 43808 stack_bytes 3672
//! query 0 class 2 ticks 985 stack_bytes 3088 logits 4009e749 405cef36 ... decimal 2.1547415 3.4521003 ...
//! ...
//! stack_high_water_bytes 5396
//! done
//! ```
//!
//! Logits are printed exactly, as the hexadecimal bit patterns of the `f32` values, then in
//! decimal for humans. Ticks are SysTick ticks of the core clock (see [`clock`]): core cycles
//! on hardware, a fixed number of instructions under `qemu-system-arm -icount shift=0`.
//! `stack_bytes` is the stack high-water mark of the phase (see [`stack`]), and
//! `stack_high_water_bytes` the largest of them; the statics, the workspace and the support
//! buffer included, are measured from the ELF file.
//!
//! The exit status is 0 on success, and on failure one of [`Failure::exit_code`]'s codes;
//! a panic exits with 101 (the `semihosting` crate's panic handler), a hard fault with 7.
#![no_std]
#![no_main]
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod clock;
mod config;
mod stack;

use core::fmt;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use engine::EngineError;
use semihosting::{eprintln, print, println, process};
use static_cell::ConstStaticCell;

use crate::clock::Clock;
use crate::config::{Model, Workspace, D, K, N};

// The embedded rows are borrowed as `f32` without conversion.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "the embedded rows are little-endian"
);

/// The inference model file, 64-byte aligned so its tensors are borrowed in place.
static MODEL: &[u8] = formats::include_model!(env!("AWGIM_MODEL_FILE"));
/// The support rows (`AWGIM_SUPPORT`, class-major little-endian f32): what the "sensor"
/// delivers, one row at a time.
static SUPPORT: &[u8] = formats::include_model!(concat!(env!("OUT_DIR"), "/support.f32"));
/// The query rows (`AWGIM_QUERIES`, little-endian f32).
static QUERIES: &[u8] = formats::include_model!(concat!(env!("OUT_DIR"), "/queries.f32"));

/// All memory `prepare` and `classify` use: zero-initialised in .bss and handed out once,
/// never built on the stack.
static WORKSPACE: ConstStaticCell<Workspace> = ConstStaticCell::new(Workspace::new());

/// Why the run failed; each kind has its own exit status.
#[derive(Debug)]
enum Failure {
    /// The core peripherals or a static were already taken, or the embedded rows are not
    /// whole aligned rows (programming errors).
    Setup(&'static str),
    /// A support row was refused (a label out of range, a class given too many shots, a
    /// non-finite feature).
    Enroll(EngineError),
    /// The embedded model file is invalid (`build.rs` checked it, so: a corrupted flash).
    Load(EngineError),
    /// `prepare` failed (a non-finite support feature, or an overflow).
    Prepare(EngineError),
    /// `classify` failed on a query.
    Classify {
        /// Index of the query.
        query: usize,
        /// What went wrong.
        error: EngineError,
    },
}

impl Failure {
    /// The exit status reported to the host: enroll 2, load 3, prepare 4, classify 5,
    /// setup 6.
    fn exit_code(&self) -> i32 {
        match self {
            Self::Enroll(_) => 2,
            Self::Load(_) => 3,
            Self::Prepare(_) => 4,
            Self::Classify { .. } => 5,
            Self::Setup(_) => 6,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Setup(what) => write!(f, "setup: {what}"),
            Self::Enroll(e) => write!(f, "enroll: {e}"),
            Self::Load(e) => write!(f, "load: {e}"),
            Self::Prepare(e) => write!(f, "prepare: {e}"),
            Self::Classify { query, error } => write!(f, "classify query {query}: {error}"),
        }
    }
}

#[entry]
fn main() -> ! {
    match run() {
        Ok(()) => {
            println!("done");
            process::exit(0)
        }
        Err(failure) => {
            eprintln!("error: {failure}");
            process::exit(failure.exit_code())
        }
    }
}

/// Embedded little-endian f32 bytes as rows of `D` features.
fn rows(bytes: &'static [u8]) -> Result<&'static [[f32; D]], Failure> {
    bytemuck::try_cast_slice(bytes).map_err(|_| Failure::Setup("embedded rows misaligned"))
}

/// Loads, enrolls, prepares and classifies, printing the report as it goes.
fn run() -> Result<(), Failure> {
    let core = cortex_m::Peripherals::take().ok_or(Failure::Setup("core peripherals taken"))?;
    let workspace = WORKSPACE
        .try_take()
        .ok_or(Failure::Setup("workspace taken"))?;
    let (sensor, queries) = (rows(SUPPORT)?, rows(QUERIES)?);

    let s = config::SIZES;
    println!(
        "awgim-firmware board {} D {} d {} heads {} N {} K {} G {} queries {}",
        config::BOARD,
        s.D,
        s.d,
        s.h,
        s.N,
        s.K,
        s.G,
        queries.len()
    );
    println!("model_bytes {}", MODEL.len());
    println!("workspace_bytes {}", Workspace::BYTES);

    let clock = Clock::start(core.SYST);
    // Each phase: paint the free stack, run and time it, read how deep the stack went.
    stack::repaint();
    let start = clock.ticks();
    let model = load(MODEL).map_err(Failure::Load)?;
    let ticks = clock.ticks() - start;
    let load_stack = stack::high_water_bytes();
    println!("load ticks {ticks} stack_bytes {load_stack}");

    // Enrollment: the rows arrive shot by shot, each labelled with its class (the embedded
    // support is class-major: shot `k` of class `i` is row `i K + k`), and each is encoded
    // into the workspace as it arrives; the rows themselves are not kept.
    stack::repaint();
    let start = clock.ticks();
    let mut enrollment = model.enroll(workspace).map_err(Failure::Enroll)?;
    for k in 0..K {
        for class in 0..N {
            let row = sensor
                .get(class * K + k)
                .ok_or(Failure::Setup("embedded support too short"))?;
            enrollment.push(class, row).map_err(Failure::Enroll)?;
        }
    }
    let ticks = clock.ticks() - start;
    let enroll_stack = stack::high_water_bytes();
    println!("enroll ticks {ticks} stack_bytes {enroll_stack}");

    // The last shot is in: prepare (which fails if a class lacks shots).
    stack::repaint();
    let start = clock.ticks();
    let mut prepared = enrollment.prepare().map_err(Failure::Prepare)?;
    let ticks = clock.ticks() - start;
    let prepare_stack = stack::high_water_bytes();
    println!("prepare ticks {ticks} stack_bytes {prepare_stack}");

    let mut classify_stack = 0;
    for (query, features) in queries.iter().enumerate() {
        stack::repaint();
        let start = clock.ticks();
        let prediction = prepared
            .classify(features)
            .map_err(|error| Failure::Classify { query, error })?;
        let ticks = clock.ticks() - start;
        let stack_bytes = stack::high_water_bytes();
        classify_stack = classify_stack.max(stack_bytes);
        print!(
            "query {query} class {} ticks {ticks} stack_bytes {stack_bytes} logits",
            prediction.class
        );
        for logit in prediction.logits {
            print!(" {:08x}", logit.to_bits());
        }
        print!(" decimal");
        for logit in prediction.logits {
            print!(" {logit}");
        }
        println!();
    }
    clock.stop();
    let high_water = load_stack
        .max(enroll_stack)
        .max(prepare_stack)
        .max(classify_stack);
    println!("stack_high_water_bytes {high_water}");
    Ok(())
}

/// `Model::load` in a frame of its own: parsing the file's header takes about 38 KB of stack
/// (the decoded header's fixed-capacity tensor table, and its copies; measured by the `load`
/// phase), which is given back when loading ends instead of staying in `run`'s frame for the
/// whole run.
#[inline(never)]
fn load(bytes: &'static [u8]) -> Result<Model<'static>, EngineError> {
    Model::load(bytes)
}

/// A hard fault (a bad memory access, an undefined instruction...) ends the run with status 7.
#[allow(unsafe_code)] // cortex-m-rt requires the handler to be declared `unsafe fn`.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    eprintln!("hard fault at pc {:#010x}", frame.pc());
    process::exit(7)
}

/// Any other exception or interrupt (none is enabled) ends the run with status 8.
#[allow(unsafe_code)] // cortex-m-rt requires the handler to be declared `unsafe fn`.
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    eprintln!("unexpected exception {irqn}");
    process::exit(8)
}
