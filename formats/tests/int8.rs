//! int8 tensors (file version 4, row pairs): the quantisation, the table of quantised
//! tensors, the row-pair layout, round trips through the writer and reader, and one test per
//! new error.

use formats::quant::{dequantize, pack_pairs, pair_stride, pairs, quantize};
use formats::tensors::{BlockNames, CA_AP, GENERATOR, SA_AP, SA_CP};
use formats::*;
use proptest::prelude::*;

fn provenance() -> Provenance {
    Provenance {
        dataset: "random".try_into().unwrap(),
        shots: 1,
        steps: 0,
        seed: 1,
        validation: None,
        tool: "formats-tests".try_into().unwrap(),
        tool_version: "0.1.0".try_into().unwrap(),
    }
}

/// A small configuration with odd `D` = 5 and `G` = 5, so the row-pair layout pads: `enc_ap`
/// and `enc_cp` (`[5][4]`, 4 rows of depth 5) have a padding column, `gen.g1` (`[8][5]`, 5
/// rows of depth 8) a pad row, `gen.g2_mu` (`[5][5]` along `In`) both.
fn tiny() -> ModelConfig {
    ModelConfig::new(5, 4, 2, 2, 1, 5)
}

/// Recognisable weights for every tensor of an inference file.
fn weights(config: &ModelConfig) -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    expected_tensors(config, FileKind::Inference)
        .enumerate()
        .map(|(t, spec)| {
            let n = spec.elements() as usize;
            let values = (0..n)
                .map(|i| ((t * 31 + i * 7) % 23) as f32 * 0.13 - 1.4)
                .collect();
            let shape = spec.shape.iter().map(|&s| s as usize).collect();
            (spec.name, shape, values)
        })
        .collect()
}

type Quantised = Vec<(&'static str, QuantAxis, Vec<i16>, Vec<f32>)>;

/// The int8 tensors of `weights` (every one `quant_axis` names).
fn quantised(weights: &[(&'static str, Vec<usize>, Vec<f32>)]) -> Quantised {
    weights
        .iter()
        .filter_map(|(name, shape, values)| {
            let axis = quant_axis(name)?;
            let (v, s) = quantize(values, shape[0], shape[1], axis).unwrap();
            Some((*name, axis, v, s))
        })
        .collect()
}

/// An inference file of `config` with every `quant_axis` tensor int8.
fn int8_file(config: ModelConfig) -> Vec<u8> {
    let w = weights(&config);
    let q = quantised(&w);
    let mut builder = FileBuilder::new(FileKind::Inference, config, provenance()).unwrap();
    for (name, _, values) in &w {
        if quant_axis(name).is_none() {
            builder.tensor(name, values).unwrap();
        }
    }
    for (name, axis, values, scales) in &q {
        builder.tensor_i8(name, *axis, values, scales).unwrap();
    }
    builder.build().unwrap()
}

fn name(s: &str) -> TensorName {
    s.try_into().unwrap()
}

fn fix_crc(file: &mut [u8]) {
    let n = file.len() - 4;
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&file[..n]);
    file[n..].copy_from_slice(&crc.to_le_bytes());
}

/// File offset of the first payload byte.
fn payload_at(file: &[u8]) -> usize {
    let parsed = parse(file).unwrap();
    parsed.payload().as_ptr() as usize - file.as_ptr() as usize
}

/// The int8 matrix of `rows` rows of `depth` values in the row-pair `values`.
fn matrix<'a>(
    axis: QuantAxis,
    rows: usize,
    depth: usize,
    values: &'a [i16],
    scales: &'a [f32],
) -> QuantTensor<'a> {
    QuantTensor {
        axis,
        rows,
        depth,
        pair_stride: pair_stride(depth),
        values,
        scales,
    }
}

#[test]
fn quant_axis_lists_the_big_products() {
    let block = |b: BlockNames| [b.wq, b.wk, b.wv, b.wo, b.f1, b.f2];
    let mut out_axis = vec!["enc_ap", "enc_cp", GENERATOR.g1];
    for b in [SA_AP, CA_AP, SA_CP] {
        out_axis.extend(block(b));
    }
    for name in &out_axis {
        assert_eq!(quant_axis(name), Some(QuantAxis::Out), "{name}");
    }
    assert_eq!(quant_axis(GENERATOR.g2_mu), Some(QuantAxis::In));
    // Everything else of a training file (which holds every parameter) stays f32.
    let mut config = ModelConfig::paper(1);
    config.classifier = Classifier {
        features: FeatureNorm::CenteredL2,
        weights: WeightsKind::Prototype,
        logits: LogitsKind::Cosine,
    };
    let mut quantised = 0;
    for spec in expected_tensors(&config, FileKind::Training) {
        match quant_axis(spec.name) {
            Some(_) => {
                quantised += 1;
                assert_eq!(spec.shape.len(), 2, "{}", spec.name);
                assert!(expected_tensors(&config, FileKind::Inference).any(|s| s.name == spec.name));
            }
            None => assert!(
                spec.shape.len() == 1
                    || matches!(
                        spec.name,
                        "gen.g2_sigma" | "dec_q.r1" | "dec_q.r2" | "dec_s.r1" | "dec_s.r2"
                    ),
                "{} stays f32",
                spec.name
            ),
        }
    }
    assert_eq!(quantised, out_axis.len() + 1);
    assert_eq!(quant_axis("adam.m.enc_ap"), None);
    assert_eq!(quant_axis("sa_ap.ln1.gain"), None);
}

#[test]
fn quantize_is_per_row_symmetric() {
    // [in = 3][out = 2]: columns (outputs) [1, -2, 0.5] and [0, 0, 0].
    let w = [1.0, 0.0, -2.0, 0.0, 0.5, 0.0];
    let (values, scales) = quantize(&w, 3, 2, QuantAxis::Out).unwrap();
    // Two rows (outputs) of depth 3, [64, -127, 32] and the zero row (scale 1, zeros): one
    // pair of stride 4, 256 * row 0 + row 1, the padding column zero.
    assert_eq!(scales, vec![2.0 / 127.0, 1.0]);
    assert_eq!(values, vec![64 * 256, -127 * 256, 32 * 256, 0]);
    // Along In: three rows (inputs) of depth 2, [127, 0], [-127, 0], [127, 0]: two pairs of
    // stride 2, the second with the zero pad row.
    let (values, scales) = quantize(&w, 3, 2, QuantAxis::In).unwrap();
    assert_eq!(scales, vec![1.0 / 127.0, 2.0 / 127.0, 0.5 / 127.0]);
    assert_eq!(values, vec![127 * 256 - 127, 0, 127 * 256, 0]);
}

#[test]
fn pair_sizes() {
    for (n, stride, pair_count) in [(0, 0, 0), (1, 2, 1), (2, 2, 1), (5, 6, 3), (640, 640, 320)] {
        assert_eq!((pair_stride(n), pairs(n)), (stride, pair_count), "{n}");
    }
    // Saturates instead of overflowing: a length no slice has.
    assert_eq!(pair_stride(usize::MAX), usize::MAX);
    assert_eq!(pairs(usize::MAX), usize::MAX / 2 + 1);
}

#[test]
fn pack_pairs_layout_and_errors() {
    // 3 rows of depth 3: pair 0 = rows 0 and 1, pair 1 = row 2 and the pad row.
    let w: [i8; 9] = [1, -2, 127, -127, 5, -1, 7, 0, -9];
    let mut out = [0x5555i16; 8];
    pack_pairs(3, 3, &w, &mut out).unwrap();
    assert_eq!(
        out,
        [
            256 - 127,
            -2 * 256 + 5,
            127 * 256 - 1,
            0,
            7 * 256,
            0,
            -9 * 256,
            0
        ]
    );
    let q = QuantTensor {
        axis: QuantAxis::Out,
        rows: 3,
        depth: 3,
        pair_stride: 4,
        values: &out,
        scales: &[0.5; 3],
    };
    q.check("q").unwrap();
    for r in 0..3 {
        for k in 0..3 {
            assert_eq!(q.weight(r, k), Some(w[r * 3 + k]), "{r} {k}");
            assert_eq!(q.get(r, k), Some(f32::from(w[r * 3 + k]) * 0.5));
        }
        assert_eq!(q.weight(r, 3), None);
    }
    assert_eq!(q.weight(3, 0), None);
    assert_eq!(q.get(3, 0), None);
    let matrix = || name("int8 matrix");
    assert_eq!(
        pack_pairs(3, 3, &w[..8], &mut out),
        Err(FormatError::LengthMismatch {
            name: matrix(),
            expected: 9,
            found: 8
        })
    );
    assert_eq!(
        pack_pairs(3, 3, &w, &mut out[..6]),
        Err(FormatError::QuantValuesLength {
            name: matrix(),
            expected: 8,
            found: 6
        })
    );
    let mut min = w;
    min[4] = i8::MIN;
    assert_eq!(
        pack_pairs(3, 3, &min, &mut out),
        Err(FormatError::QuantValueOutOfRange {
            name: matrix(),
            index: 4
        })
    );
    // Empty matrices pack to nothing.
    pack_pairs(0, 3, &[], &mut []).unwrap();
    pack_pairs(3, 0, &[], &mut []).unwrap();
}

#[test]
fn check_rejects_values_that_hold_no_int8_pair() {
    // 2 rows of depth 2, all ones but value `at`.
    let check = |at: usize, v: i16| {
        let mut values = [257i16; 2];
        values[at] = v;
        QuantTensor {
            axis: QuantAxis::In,
            rows: 2,
            depth: 2,
            pair_stride: 2,
            values: &values,
            scales: &[1.0; 2],
        }
        .check("t")
    };
    let out_of_range = |index| {
        Err(FormatError::QuantValueOutOfRange {
            name: name("t"),
            index,
        })
    };
    // Low byte -128; high part 128 (32767 = 128 * 256 - 1) or -128; the extremes that hold a
    // pair are fine.
    for bad in [
        0x0080,
        -0x0080,
        i16::MAX,
        i16::MIN,
        i16::MIN + 127,
        127 * 256 + 128,
    ] {
        assert_eq!(check(1, bad), out_of_range(1), "{bad:#x}");
    }
    for good in [
        127 * 256 + 127,
        -127 * 256 - 127,
        -127 * 256 + 127,
        127,
        -127,
        0,
    ] {
        assert_eq!(check(0, good), Ok(()), "{good}");
    }
}

/// The quantisation did not change with the layout: the int8 values `w[r][k]` (read back
/// through [`QuantTensor::weight`]) and the scales of the row-pair `quantize` hash to what the
/// row-by-row `quantize` of version 3 (commit 37314a5, `values[r * stride + k]`) gave on the
/// same matrices: FNV-1a 64 over every `w[r][k]` byte, row-major, then every scale's
/// little-endian bits, for each matrix in turn (22,670 values): random ones of several shapes,
/// axes and weight scales, then two whose rows hold exact halves (scale 1, values `j + 0.5`).
#[test]
fn quantize_gives_the_values_and_scales_of_version_3() {
    const VERSION_3_HASH: u64 = 0x771e_81b0_8ed1_7c73;
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut count = 0;
    let mut record = |w: &[f32], inputs: usize, outputs: usize, axis: QuantAxis| {
        let mut eat = |b: u8| {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        };
        let (values, scales) = quantize(w, inputs, outputs, axis).unwrap();
        let (rows, depth) = axis.rows_depth(inputs, outputs);
        let q = matrix(axis, rows, depth, &values, &scales);
        for r in 0..rows {
            for k in 0..depth {
                eat(q.weight(r, k).unwrap() as u8);
                count += 1;
            }
        }
        for s in &scales {
            s.to_bits().to_le_bytes().into_iter().for_each(&mut eat);
        }
    };
    let shapes = [
        (1, 1),
        (3, 2),
        (2, 3),
        (5, 5),
        (8, 5),
        (5, 8),
        (7, 13),
        (64, 32),
        (33, 17),
    ];
    for (case, &(inputs, outputs)) in shapes.iter().enumerate() {
        for axis in [QuantAxis::Out, QuantAxis::In] {
            for scale in [0.0f32, 1e-25, 0.7, 300.0] {
                let w = random_weights(inputs * outputs, scale, case as u64 * 7 + 1);
                record(&w, inputs, outputs, axis);
            }
        }
    }
    for axis in [QuantAxis::Out, QuantAxis::In] {
        let (inputs, outputs) = (9, 7);
        let w: Vec<f32> = (0..inputs * outputs)
            .map(|at| {
                let (i, o) = (at / outputs, at % outputs);
                let first = match axis {
                    QuantAxis::Out => i == 0,
                    QuantAxis::In => o == 0,
                };
                if first {
                    127.0
                } else {
                    ((i * 3 + o * 5) % 60) as f32 * 0.5 - 15.0
                }
            })
            .collect();
        record(&w, inputs, outputs, axis);
    }
    assert_eq!(count, 22_670);
    assert_eq!(hash, VERSION_3_HASH, "{hash:#018x}");
}

#[test]
fn dequantize_writes_the_in_out_layout() {
    let w = [1.0, 0.25, -2.0, 0.0, 0.5, -0.125];
    for axis in [QuantAxis::Out, QuantAxis::In] {
        let (values, scales) = quantize(&w, 3, 2, axis).unwrap();
        let (rows, depth) = axis.rows_depth(3, 2);
        let q = matrix(axis, rows, depth, &values, &scales);
        let mut out = [0.0; 6];
        dequantize(&q, &mut out).unwrap();
        for (i, (a, b)) in w.iter().zip(&out).enumerate() {
            assert!(
                (a - b).abs() <= 2.0 / 127.0 / 2.0,
                "{axis:?} {i}: {a} vs {b}"
            );
        }
        let mut short = [0.0; 5];
        assert!(matches!(
            dequantize(&q, &mut short),
            Err(FormatError::LengthMismatch { .. })
        ));
    }
}

#[test]
fn quantize_errors() {
    assert!(matches!(
        quantize(&[1.0; 5], 3, 2, QuantAxis::Out),
        Err(FormatError::LengthMismatch {
            expected: 6,
            found: 5,
            ..
        })
    ));
    let mut w = [1.0; 6];
    w[4] = f32::NAN;
    assert_eq!(
        quantize(&w, 3, 2, QuantAxis::Out),
        Err(FormatError::NonFiniteWeight { index: 4 })
    );
    w[4] = f32::NEG_INFINITY;
    assert_eq!(
        quantize(&w, 3, 2, QuantAxis::In),
        Err(FormatError::NonFiniteWeight { index: 4 })
    );
    // A row so small its scale would be zero is a zero row.
    let (values, scales) = quantize(&[1e-44, 0.0], 1, 2, QuantAxis::In).unwrap();
    assert_eq!((values, scales), (vec![0; 2], vec![1.0]));
}

#[test]
fn int8_file_round_trips_as_version_4() {
    let config = tiny();
    let file = int8_file(config);
    assert_eq!(u16::from_le_bytes([file[8], file[9]]), PAIR_VERSION);
    assert_eq!(VERSION, PAIR_VERSION);
    let aligned = AlignedBuf::from_bytes(&file);
    let parsed = parse(&aligned).unwrap();
    let w = weights(&config);
    let q = quantised(&w);
    for (name, shape, values) in &w {
        match quant_axis(name) {
            None => {
                assert_eq!(parsed.dtype(name).unwrap(), Dtype::F32);
                assert_eq!(parsed.tensor(name).unwrap(), &values[..]);
                assert_eq!(
                    parsed.tensor_i8(name).unwrap_err(),
                    FormatError::WrongDtype {
                        name: (*name).try_into().unwrap(),
                        expected: Dtype::I8,
                        found: Dtype::F32
                    }
                );
            }
            Some(axis) => {
                assert_eq!(parsed.dtype(name).unwrap(), Dtype::I8);
                let t = parsed.tensor_i8(name).unwrap();
                let (_, _, qv, qs) = q.iter().find(|(n, ..)| n == name).unwrap();
                let (rows, depth) = axis.rows_depth(shape[0], shape[1]);
                assert_eq!((t.axis, t.rows, t.depth), (axis, rows, depth));
                assert_eq!(t.pair_stride, depth.div_ceil(2) * 2);
                assert_eq!((t.values, t.scales), (&qv[..], &qs[..]));
                let wrong = FormatError::WrongDtype {
                    name: (*name).try_into().unwrap(),
                    expected: Dtype::F32,
                    found: Dtype::I8,
                };
                assert_eq!(parsed.tensor(name).unwrap_err(), wrong);
                assert_eq!(parsed.to_vec(name).unwrap_err(), wrong);
                let mut out = vec![0.0; values.len()];
                assert_eq!(parsed.copy_tensor(name, &mut out).unwrap_err(), wrong);
                dequantize(&t, &mut out).unwrap();
                let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (a, b) in values.iter().zip(&out) {
                    assert!((a - b).abs() <= max / 127.0 * 0.5 + 1e-6);
                }
                let entry = parsed.entry(name).unwrap();
                assert_eq!(entry.quant, Some(axis));
                let bytes = parsed.tensor_bytes(name).unwrap();
                assert_eq!(bytes.len(), rows.div_ceil(2) * t.pair_stride * 2 + rows * 4);
                let stored: Vec<i16> = bytes[..qv.len() * 2]
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect();
                assert_eq!(&stored, qv, "{name}: little-endian i16 values");
            }
        }
    }
    // The header copy carries the axes; an unaligned copy cannot borrow the scales.
    let header = parsed.to_header();
    assert!(header
        .tensors
        .iter()
        .any(|e| e.quant == Some(QuantAxis::In)));
    let mut unaligned = vec![0u8; file.len() + 1];
    unaligned[1..].copy_from_slice(&file);
    let parsed = parse(&unaligned[1..]).unwrap();
    assert!(matches!(
        parsed.tensor_i8("enc_ap"),
        Err(FormatError::NotZeroCopy { .. })
    ));
    // Writing the same contents again gives the same bytes.
    assert_eq!(int8_file(config), file);
}

#[test]
fn f32_files_keep_their_versions() {
    let config = tiny();
    let w = weights(&config);
    let mut builder = FileBuilder::new(FileKind::Inference, config, provenance()).unwrap();
    for (name, _, values) in &w {
        builder.tensor(name, values).unwrap();
    }
    let file = builder.build().unwrap();
    assert_eq!(u16::from_le_bytes([file[8], file[9]]), PAPER_VERSION);
    let parsed = parse(&file).unwrap();
    assert!(parsed.entries().all(|e| e.quant.is_none()));
    assert_eq!(parsed.dtype("enc_ap").unwrap(), Dtype::F32);
}

#[test]
fn paper_int8_file_is_under_a_third_of_f32() {
    let config = ModelConfig::paper(5);
    let w = weights(&config);
    let mut builder = FileBuilder::new(FileKind::Inference, config, provenance()).unwrap();
    for (name, _, values) in &w {
        builder.tensor(name, values).unwrap();
    }
    let f32_len = builder.build().unwrap().len();
    let int8_len = int8_file(config).len();
    assert!(int8_len * 3 <= f32_len, "{int8_len} vs {f32_len}");
}

/// Builder errors for an int8 tensor: `(name, axis, values, scales)` -> error.
fn add_i8(name: &str, axis: QuantAxis, values: &[i16], scales: &[f32]) -> FormatError {
    let mut builder = FileBuilder::new(FileKind::Inference, tiny(), provenance()).unwrap();
    match builder.tensor_i8(name, axis, values, scales) {
        Ok(_) => panic!("{name} accepted"),
        Err(e) => e,
    }
}

#[test]
fn builder_rejects_bad_int8_tensors() {
    // enc_ap: [5][4] along Out: 4 rows of depth 5, 2 pairs of stride 6.
    let good = [257i16; 12];
    let mut padded = good;
    for pair in 0..2 {
        padded[pair * 6 + 5] = 0;
    }
    let scales = [0.5f32; 4];
    let mut builder = FileBuilder::new(FileKind::Inference, tiny(), provenance()).unwrap();
    builder
        .tensor_i8("enc_ap", QuantAxis::Out, &padded, &scales)
        .unwrap();
    assert_eq!(
        builder
            .tensor_i8("enc_ap", QuantAxis::Out, &padded, &scales)
            .unwrap_err(),
        FormatError::DuplicateTensor {
            name: name("enc_ap")
        }
    );
    assert_eq!(
        add_i8("enc_ap", QuantAxis::Out, &padded, &scales[..3]),
        FormatError::ScaleCount {
            name: name("enc_ap"),
            expected: 4,
            found: 3
        }
    );
    assert_eq!(
        add_i8("enc_ap", QuantAxis::Out, &padded[..11], &scales),
        FormatError::QuantValuesLength {
            name: name("enc_ap"),
            expected: 12,
            found: 11
        }
    );
    // The padding column holds rows 0 and 1 (257 = 256 * 1 + 1): row 0 is reported first.
    assert_eq!(
        add_i8("enc_ap", QuantAxis::Out, &good, &scales),
        FormatError::NonzeroQuantPadding {
            name: name("enc_ap"),
            row: 0
        }
    );
    let mut odd = padded;
    odd[11] = 1;
    assert_eq!(
        add_i8("enc_ap", QuantAxis::Out, &odd, &scales),
        FormatError::NonzeroQuantPadding {
            name: name("enc_ap"),
            row: 3
        }
    );
    let mut min = padded;
    min[9] = 0x80;
    assert_eq!(
        add_i8("enc_ap", QuantAxis::Out, &min, &scales),
        FormatError::QuantValueOutOfRange {
            name: name("enc_ap"),
            index: 9
        }
    );
    for bad in [0.0, -0.5, f32::NAN, f32::INFINITY, f32::MAX / 100.0] {
        let mut s = scales;
        s[2] = bad;
        match add_i8("enc_ap", QuantAxis::Out, &padded, &s) {
            FormatError::InvalidScale { row: 2, .. } => {}
            e => panic!("{bad}: {e:?}"),
        }
    }
    // gen.g1: [8][5] along Out: 5 rows of depth 8, the third pair's second row the pad row.
    let mut g1 = [257i16; 24];
    for k in 0..8 {
        g1[16 + k] = 256;
    }
    let mut builder = FileBuilder::new(FileKind::Inference, tiny(), provenance()).unwrap();
    builder
        .tensor_i8("gen.g1", QuantAxis::Out, &g1, &[1.0; 5])
        .unwrap();
    g1[20] = 256 - 3;
    assert_eq!(
        add_i8("gen.g1", QuantAxis::Out, &g1, &[1.0; 5]),
        FormatError::NonzeroQuantPadding {
            name: name("gen.g1"),
            row: 5
        }
    );
    for (tensor, axis) in [
        ("enc_ap", QuantAxis::In),
        ("gen.g2_mu", QuantAxis::Out),
        ("sa_ap.ln1.gain", QuantAxis::Out),
    ] {
        assert_eq!(
            add_i8(tensor, axis, &padded, &scales),
            FormatError::QuantNotAllowed {
                name: name(tensor),
                axis
            }
        );
    }
    let q = QuantTensor {
        axis: QuantAxis::Out,
        rows: 4,
        depth: 5,
        pair_stride: 5,
        values: &padded[..10],
        scales: &scales,
    };
    assert_eq!(
        q.check("x"),
        Err(FormatError::QuantStride {
            name: name("x"),
            expected: 6,
            found: 5
        })
    );
}

/// File offset of the dtype code of `tensor`'s table entry in a version-3 file of [`tiny`]:
/// its name, then its shape (a count and one-byte dimensions in this small file) and its
/// offset (a varint).
fn dtype_code_at(file: &[u8], tensor: &str) -> usize {
    let mut needle = vec![tensor.len() as u8];
    needle.extend_from_slice(tensor.as_bytes());
    let at = file
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let shape_at = at + needle.len();
    let mut offset_at = shape_at + 1 + file[shape_at] as usize;
    while file[offset_at] & 0x80 != 0 {
        offset_at += 1;
    }
    offset_at + 1
}

/// Sets the codes of the f32 tensor `tensor`'s table entry to int8 along `Out`.
fn make_int8(file: &mut [u8], tensor: &str) {
    let at = dtype_code_at(file, tensor);
    assert_eq!((file[at], file[at + 1]), (0, 0));
    file[at] = 1;
    file[at + 1] = 1;
}

fn edited(edit: impl FnOnce(&mut Vec<u8>, usize)) -> FormatError {
    let mut file = int8_file(tiny());
    let payload = payload_at(&file);
    edit(&mut file, payload);
    fix_crc(&mut file);
    parse(&file).unwrap_err()
}

#[test]
fn reader_rejects_unknown_codes() {
    for (dtype, axis, expected) in [
        (2, 1, "dtype"),
        (255, 0, "dtype"),
        (1, 0, "axis"),
        (1, 3, "axis"),
        (0, 1, "axis"),
    ] {
        let error = edited(|file, _| {
            let at = dtype_code_at(file, "gen.g1");
            assert_eq!((file[at], file[at + 1]), (1, 1));
            file[at] = dtype;
            file[at + 1] = axis;
        });
        let want = match expected {
            "dtype" => FormatError::UnknownDtype {
                name: name("gen.g1"),
                code: dtype,
            },
            _ => FormatError::UnknownQuantAxis {
                name: name("gen.g1"),
                code: axis,
            },
        };
        assert_eq!(error, want, "dtype {dtype} axis {axis}");
    }
    // A known axis the table does not give this tensor, and an int8 layer norm.
    let error = edited(|file, _| {
        let at = dtype_code_at(file, "gen.g1");
        file[at + 1] = 2;
    });
    assert_eq!(
        error,
        FormatError::QuantNotAllowed {
            name: name("gen.g1"),
            axis: QuantAxis::In
        }
    );
    let error = edited(|file, _| make_int8(file, "sa_ap.ln2.bias"));
    assert_eq!(
        error,
        FormatError::QuantNotAllowed {
            name: name("sa_ap.ln2.bias"),
            axis: QuantAxis::Out
        }
    );
}

/// Payload offset of `tensor` in the int8 file of [`tiny`].
fn tensor_offset(tensor: &str) -> usize {
    let file = int8_file(tiny());
    let parsed = parse(&file).unwrap();
    let offset = parsed.entry(tensor).unwrap().offset;
    offset as usize
}

#[test]
fn reader_rejects_bad_int8_contents() {
    // enc_ap: 4 rows of depth 5, 2 pairs of stride 6 (12 little-endian i16, 24 bytes), then 4
    // scales; value k of pair p at byte 2 (6 p + k), its low byte (the odd row) first.
    let enc = tensor_offset("enc_ap");
    for (byte, row) in [(2 * 5 + 1, 0), (2 * 5, 1), (2 * 11 + 1, 2), (2 * 11, 3)] {
        let error = edited(|file, payload| file[payload + enc + byte] = 1);
        assert_eq!(
            error,
            FormatError::NonzeroQuantPadding {
                name: name("enc_ap"),
                row
            },
            "byte {byte}"
        );
    }
    let error = edited(|file, payload| file[payload + enc + 2 * 7] = 0x80);
    assert_eq!(
        error,
        FormatError::QuantValueOutOfRange {
            name: name("enc_ap"),
            index: 7
        }
    );
    // 0x7fff: low byte -1, high part 128.
    let error = edited(|file, payload| {
        let at = payload + enc + 2 * 8;
        file[at..at + 2].copy_from_slice(&i16::MAX.to_le_bytes());
    });
    assert_eq!(
        error,
        FormatError::QuantValueOutOfRange {
            name: name("enc_ap"),
            index: 8
        }
    );
    // gen.g1: 5 rows of depth 8, the pad row the low bytes of pair 2 (values 16..24).
    let g1 = tensor_offset("gen.g1");
    let error = edited(|file, payload| file[payload + g1 + 2 * 19] = 1);
    assert_eq!(
        error,
        FormatError::NonzeroQuantPadding {
            name: name("gen.g1"),
            row: 5
        }
    );
    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY, 3e36] {
        let error = edited(|file, payload| {
            let at = payload + enc + 24 + 3 * 4;
            file[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        });
        assert!(
            matches!(error, FormatError::InvalidScale { row: 3, ref name, .. } if name == "enc_ap"),
            "{bad}: {error:?}"
        );
    }
    // The padding after an int8 tensor (40 bytes; before the next one) is checked like any
    // other.
    let error = edited(|file, payload| file[payload + enc + 40] = 1);
    assert!(
        matches!(error, FormatError::NonzeroPadding { .. }),
        "{error:?}"
    );
}

/// `file` with its version field set to `version` (and its CRC fixed).
fn with_version(file: &[u8], version: u16) -> Vec<u8> {
    let mut file = file.to_vec();
    file[8..10].copy_from_slice(&version.to_le_bytes());
    fix_crc(&mut file);
    file
}

#[test]
fn version_3_int8_tensors_are_retired() {
    // Yesterday's version-3 int8 file has the same header as a version-4 one: only the layout
    // of its int8 tensors differs, which the reader refuses for the first int8 tensor.
    let file = with_version(&int8_file(tiny()), QUANT_VERSION);
    let error = parse(&file).unwrap_err();
    assert_eq!(
        error,
        FormatError::Int8LayoutRetired {
            name: name("enc_ap")
        }
    );
    let message = error.to_string();
    assert!(
        message.contains("`enc_ap`")
            && message.contains("version-3")
            && message.contains("row by row")
            && message.contains("trainer export --int8"),
        "{message}"
    );
    // A version later than 4 is not read.
    assert_eq!(
        parse(&with_version(&int8_file(tiny()), PAIR_VERSION + 1)).unwrap_err(),
        FormatError::UnsupportedVersion {
            found: PAIR_VERSION + 1,
            supported: PAIR_VERSION
        }
    );
}

/// A version-3 file without int8 tensors, as the version-3 writer wrote none but any tool
/// could: the header of a version-2 file of `config` with a dtype (0) and axis (0) code after
/// every entry's offset, and the same payload.
fn version_3_f32_file(config: ModelConfig) -> Vec<u8> {
    let w = weights(&config);
    let mut builder = FileBuilder::new(FileKind::Inference, config, provenance()).unwrap();
    for (name, _, values) in &w {
        builder.tensor(name, values).unwrap();
    }
    let v2 = builder.build().unwrap();
    let parsed = parse(&v2).unwrap();
    let header = parsed.to_header();
    let summary = (
        header.kind,
        header.config,
        &header.provenance,
        &header.training,
    );
    let mut encoded = postcard::to_allocvec(&summary).unwrap();
    encoded = postcard::to_extend(&config.classifier, encoded).unwrap();
    let records: Vec<_> = header
        .tensors
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone(), e.offset, 0u8, 0u8))
        .collect();
    encoded = postcard::to_extend(&records, encoded).unwrap();
    let payload = parsed.payload();
    let mut file = Vec::new();
    file.extend_from_slice(&MAGIC);
    file.extend_from_slice(&QUANT_VERSION.to_le_bytes());
    file.extend_from_slice(&0u16.to_le_bytes());
    file.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    file.extend_from_slice(&encoded);
    file.resize(
        (PREFIX_LEN + encoded.len()).div_ceil(ALIGNMENT) * ALIGNMENT,
        0,
    );
    file.extend_from_slice(payload);
    file.extend_from_slice(&[0; 4]);
    fix_crc(&mut file);
    file
}

#[test]
fn version_3_files_without_int8_still_read() {
    let mut config = tiny();
    config.classifier.features = FeatureNorm::CenteredL2;
    let file = version_3_f32_file(config);
    assert_eq!(u16::from_le_bytes([file[8], file[9]]), QUANT_VERSION);
    let parsed = parse(&file).unwrap();
    assert_eq!(parsed.config(), config);
    for (name, _, values) in weights(&config) {
        assert_eq!(parsed.dtype(name).unwrap(), Dtype::F32);
        assert_eq!(parsed.to_vec(name).unwrap(), values, "{name}");
    }
    // Its typed table is read as such: an int8 code in it is the retired layout.
    let error = edited_file(file, |file| make_int8(file, "gen.g1"));
    assert_eq!(
        error,
        FormatError::Int8LayoutRetired {
            name: name("gen.g1")
        }
    );
}

fn edited_file(mut file: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> FormatError {
    edit(&mut file);
    fix_crc(&mut file);
    parse(&file).unwrap_err()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// quantize -> dequantize is within half a step of every weight, for any shape (padded
    /// or not), axis and weights (zero rows included), and the stored values are `pack_pairs`
    /// of the weights `QuantTensor::weight` reads back.
    #[test]
    fn int8_tensors_round_trip(
        shape in (1usize..12, 1usize..12),
        axis in prop_oneof![Just(QuantAxis::Out), Just(QuantAxis::In)],
        scale in prop_oneof![Just(0.0f32), 1e-30f32..1e-20, 1e-3f32..1e3],
        seed in any::<u64>(),
    ) {
        let (inputs, outputs) = shape;
        let w = random_weights(inputs * outputs, scale, seed);
        let (values, scales) = quantize(&w, inputs, outputs, axis).unwrap();
        let (rows, depth) = axis.rows_depth(inputs, outputs);
        let q = matrix(axis, rows, depth, &values, &scales);
        prop_assert_eq!(q.check("w"), Ok(()));
        // The stored values are the row pairs of the weights `weight` reads back.
        let mut rows_major = Vec::with_capacity(rows * depth);
        for r in 0..rows {
            for k in 0..depth {
                rows_major.push(q.weight(r, k).unwrap());
            }
        }
        let mut packed = vec![0x5555i16; pairs(rows) * pair_stride(depth)];
        pack_pairs(rows, depth, &rows_major, &mut packed).unwrap();
        prop_assert_eq!(&packed, &values);
        let mut back = vec![0.0; w.len()];
        dequantize(&q, &mut back).unwrap();
        for (r, &step) in scales.iter().enumerate() {
            for k in 0..depth {
                let (i, o) = match axis {
                    QuantAxis::Out => (k, r),
                    QuantAxis::In => (r, k),
                };
                let a = w[i * outputs + o];
                let b = back[i * outputs + o];
                prop_assert_eq!(Some(b), q.get(r, k));
                prop_assert!((a - b).abs() <= step * 0.5 * (1.0 + 1e-5), "{} vs {}", a, b);
            }
        }
    }
}

/// `n` weights in `[-scale / 2, scale / 2)` from `seed` (xorshift).
fn random_weights(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}
