//! What the engine's integration tests share: calling a test function generic over the
//! compiled sizes with the types a build script writes for a configuration.

/// `$f::<D, d, h, N, K, G, NK, d2, V, LEN>($config, workspace)` for the configuration
/// `$config` (a constant expression): the sizes, `V` (the classifier variants compiled in)
/// and a boxed workspace of `awgim_workspace!(sizes, classifier; $b)`, as a build script
/// would write them from the file's header.
macro_rules! sized {
    ($f:ident, $config:expr, $b:expr) => {{
        const CONFIG: formats::ModelConfig = $config;
        const S: formats::Sizes = CONFIG.sizes();
    type W = engine::awgim_workspace!(S, CONFIG.classifier; $b);
        $f::<
            { S.D },
            { S.d },
            { S.h },
            { S.N },
            { S.K },
            { S.G },
            { S.N * S.K },
            { 2 * S.d },
            { !engine::is_paper(CONFIG.classifier) },
            _,
        >(CONFIG, Box::new(W::new()))
    }};
}
pub(crate) use sized;

/// `len` deterministic feature values in [-0.3, 0.7): support rows, then queries.
pub(crate) fn features(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i as f32) * 0.618).fract() - 0.3).collect()
}

/// The rows of `D` values of `x`, as the compiled-size engine takes them.
pub(crate) fn rows<const D: usize>(x: &[f32]) -> Vec<[f32; D]> {
    x.chunks_exact(D).map(|r| r.try_into().unwrap()).collect()
}
