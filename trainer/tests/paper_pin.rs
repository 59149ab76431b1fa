//! `trainer --paper` computes exactly what it computed before issue 12 ("beyond the paper")
//! added its own variants: the paper's sizes, options and loss on a fixed batch are pinned.

use autodiff::{Backend, Evaluator};
use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use trainer::awgim::{self, input, BatchShape};
use trainer::options::{Settings, TrainArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

fn paper_settings(shots: &str) -> Settings {
    let cli = Cli::parse_from([
        "trainer",
        "--paper",
        "--shots",
        shots,
        "--out",
        "/nonexistent/p",
    ]);
    cli.train.resolve().unwrap()
}

/// The total training loss of the `--paper` 5-shot run on one fixed batch of two tasks
/// (features uniform in [0, 1) from a seeded generator, D = 64, labels class-major), with
/// parameters initialised as a run initialises them and the noise and dropout masks drawn as
/// a training step draws them.
fn paper_loss(shots: &str) -> f32 {
    let settings = paper_settings(shots);
    let config = settings.model_config(64);
    let shape = BatchShape {
        tasks: 2,
        queries_per_class: settings.queries as usize,
    };
    let params = awgim::init_params(&config, &mut Xoshiro256PlusPlus::seed_from_u64(1));
    let built = awgim::build_train(&config, shape, settings.train_options(), &params).unwrap();
    let inputs = built.graph.inputs();
    let sizes = config.sizes();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    let mut eval = Evaluator::new(built.graph, &[built.losses.total], Backend::Cpu).unwrap();
    eval.load_params(&params).unwrap();
    for (name, dims) in &inputs {
        let numel: usize = dims.iter().product();
        let rows_per_class = match name.as_str() {
            input::SUPPORT_TARGETS => sizes.K,
            input::QUERY_TARGETS => shape.queries_per_class,
            input::SUPPORT | input::QUERY => {
                let x: Vec<f32> = (0..numel).map(|_| rng.gen_range(0.0..1.0)).collect();
                eval.set_input(name, &x).unwrap();
                continue;
            }
            _ => continue,
        };
        let rows = numel / sizes.N;
        let mut one_hot = vec![0.0; numel];
        for r in 0..rows {
            one_hot[r * sizes.N + (r / rows_per_class) % sizes.N] = 1.0;
        }
        eval.set_input(name, &one_hot).unwrap();
    }
    let keep = 1.0 - settings.dropout;
    awgim::draw_random_inputs(&inputs, keep, &mut rng, |name, v| eval.set_input(name, &v)).unwrap();
    eval.run().unwrap()[0][0]
}

#[test]
fn paper_settings_are_the_papers() {
    for (shots, batch, lr) in [("1", 64, 2e-4), ("5", 32, 1e-3)] {
        let s = paper_settings(shots);
        assert_eq!((s.latent, s.heads, s.generator), (128, 4, 256));
        assert_eq!((s.steps, s.batch, s.lr, s.queries), (50_000, batch, lr, 15));
        assert_eq!(
            (s.decay_rate, s.decay_every, s.weight_decay),
            (0.2, 15_000, 1e-6)
        );
        assert_eq!((s.clip_value, s.clip_norm, s.dropout), (0.1, 0.1, 0.3));
        assert_eq!(s.loss_weights, awgim::LossWeights::default());
    }
}

/// The pinned value was printed by this test's `paper_loss("5")` run on the code of commit
/// eeb1016 (before issue 12 changed anything), CPU backend, release build.
#[test]
fn paper_loss_on_a_fixed_batch_is_pinned() {
    let loss = paper_loss("5");
    println!(
        "paper 5-shot loss on the fixed batch: {loss:.9e} (bits {:#x})",
        loss.to_bits()
    );
    assert_eq!(loss.to_bits(), PAPER_5SHOT_LOSS_BITS, "{loss:.9e}");
}

/// 9.728369713 (f32 bits 0x411ba767).
const PAPER_5SHOT_LOSS_BITS: u32 = 0x411b_a767;
