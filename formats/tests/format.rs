//! Round trips, one test per error, and robustness of the reader against damaged files.

use formats::*;
use proptest::prelude::*;

fn provenance() -> Provenance {
    Provenance {
        dataset: "random".try_into().unwrap(),
        shots: 1,
        steps: 12,
        seed: 3,
        validation: Some(Validation {
            accuracy: 0.61,
            ci95: 0.008,
        }),
        tool: "formats-tests".try_into().unwrap(),
        tool_version: "0.1.0".try_into().unwrap(),
    }
}

fn training_state() -> TrainingState {
    TrainingState {
        step: 1500,
        best_val_accuracy: 0.6,
        best_step: 1200,
        skipped_steps: 2,
        rng_state: [1, 2, 3, u64::MAX],
        trainer_options: heapless::Vec::from_slice(&[7u8; 1000]).unwrap(),
    }
}

/// A small configuration that keeps files a few KiB.
fn tiny() -> ModelConfig {
    ModelConfig::new(8, 4, 2, 2, 1, 6)
}

/// Distinct, recognisable values for every tensor a file may hold.
fn tensor_data(config: &ModelConfig, kind: FileKind, adam: bool) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for (t, spec) in expected_tensors(config, kind).enumerate() {
        let n = spec.elements() as usize;
        out.push((
            spec.name.to_string(),
            (0..n)
                .map(|i| t as f32 * 1000.0 + i as f32 * 0.5)
                .collect::<Vec<f32>>(),
        ));
    }
    if adam {
        let base = out.clone();
        for (prefix, scale) in [(ADAM_M_PREFIX, -1.0), (ADAM_V_PREFIX, 2.0)] {
            for (name, values) in &base {
                out.push((
                    format!("{prefix}{name}"),
                    values.iter().map(|v| v * scale).collect(),
                ));
            }
        }
    }
    out
}

fn build(
    config: ModelConfig,
    kind: FileKind,
    training: Option<TrainingState>,
    adam: bool,
) -> (Vec<u8>, Vec<(String, Vec<f32>)>) {
    let data = tensor_data(&config, kind, adam);
    let mut builder = FileBuilder::new(kind, config, provenance()).unwrap();
    if let Some(state) = training {
        builder.training_state(state);
    }
    // Added in reverse to show the writer's layout does not depend on insertion order.
    for (name, values) in data.iter().rev() {
        builder.tensor(name, values).unwrap();
    }
    (builder.build().unwrap(), data)
}

fn valid_tiny() -> Vec<u8> {
    build(tiny(), FileKind::Inference, None, false).0
}

/// Reassembles a file from a header and payload, with a correct prefix, padding and CRC,
/// written from FORMAT.md independently of the writer.
fn assemble(header: &Header, payload: &[u8]) -> Vec<u8> {
    assemble_raw(&postcard::to_allocvec(header).unwrap(), payload)
}

fn assemble_raw(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"AWGIM\0MF");
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    while out.len() % 64 != 0 {
        out.push(0);
    }
    out.extend_from_slice(payload);
    fix_crc_appended(&mut out);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(bytes)
}

fn fix_crc_appended(out: &mut Vec<u8>) {
    let crc = crc32(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Rewrites the CRC of a complete file after editing it.
fn fix_crc(file: &mut [u8]) {
    let n = file.len() - 4;
    let crc = crc32(&file[..n]);
    file[n..].copy_from_slice(&crc.to_le_bytes());
}

/// Parses a valid file, edits its header, and reassembles it around the same payload.
fn with_header(edit: impl FnOnce(&mut Header)) -> Vec<u8> {
    with_parts(|header, _| edit(header))
}

/// Like [`with_header`], with the payload editable too.
fn with_parts(edit: impl FnOnce(&mut Header, &mut Vec<u8>)) -> Vec<u8> {
    let file = valid_tiny();
    let parsed = parse(&file).unwrap();
    let mut header = parsed.to_header();
    let mut payload = parsed.payload().to_vec();
    edit(&mut header, &mut payload);
    assemble(&header, &payload)
}

fn name(s: &str) -> TensorName {
    s.try_into().unwrap()
}

fn check_round_trip(kind: FileKind, training: Option<TrainingState>, adam: bool) {
    let config = ModelConfig::edge(5);
    let (file, data) = build(config, kind, training.clone(), adam);
    let aligned = AlignedBuf::from_bytes(&file);
    let parsed = parse(&aligned).unwrap();
    assert_eq!(parsed.kind(), kind);
    assert_eq!(parsed.config(), config);
    assert_eq!(parsed.provenance(), provenance());
    assert_eq!(parsed.training(), training);
    assert_eq!(
        parsed.trainer_options(),
        training.as_ref().map(|t| &t.trainer_options[..])
    );
    assert_eq!(parsed.tensor_count(), data.len());
    assert_eq!(parsed.entries().count(), data.len());
    let header = parsed.to_header();
    assert_eq!(header.tensors.len(), data.len());
    assert_eq!(postcard::to_allocvec(&header).unwrap().len(), {
        let h = u32::from_le_bytes(file[12..16].try_into().unwrap());
        h as usize
    });
    assert_eq!(parsed.contains("adam.m.enc_ap"), adam);
    assert!(!parsed.contains("nope"));
    for (name, values) in &data {
        assert_eq!(parsed.tensor(name).unwrap(), &values[..], "{name}");
        assert_eq!(parsed.to_vec(name).unwrap(), *values, "{name}");
        let entry = parsed.entry(name).unwrap();
        assert_eq!(entry.offset % 64, 0);
        assert_eq!(
            (parsed.payload().as_ptr() as usize + entry.offset as usize) % 64,
            0
        );
    }
    // The layout of FORMAT.md, read literally.
    assert_eq!(&file[..8], b"AWGIM\0MF");
    assert_eq!(u16::from_le_bytes([file[8], file[9]]), 1);
    let h = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    let p = u32::from_le_bytes(file[16..20].try_into().unwrap()) as usize;
    let start = (20 + h).div_ceil(64) * 64;
    assert_eq!(file.len(), start + p + 4);
    let n = file.len() - 4;
    assert_eq!(
        u32::from_le_bytes(file[n..].try_into().unwrap()),
        crc32(&file[..n])
    );
    let first = &data[0];
    let e = parsed.entry(&first.0).unwrap();
    let at = start + e.offset as usize;
    assert_eq!(
        f32::from_le_bytes(file[at + 4..at + 8].try_into().unwrap()),
        first.1[1]
    );
    // Writing is deterministic whatever the insertion order.
    let mut builder = FileBuilder::new(kind, config, provenance()).unwrap();
    if let Some(state) = training {
        builder.training_state(state);
    }
    for (name, values) in &data {
        builder.tensor(name, values).unwrap();
    }
    assert_eq!(builder.build().unwrap(), file);
}

#[test]
fn round_trip_inference() {
    check_round_trip(FileKind::Inference, None, false);
}

#[test]
fn round_trip_training_bare() {
    check_round_trip(FileKind::Training, None, false);
}

#[test]
fn round_trip_training_with_state() {
    check_round_trip(FileKind::Training, Some(training_state()), false);
}

#[test]
fn round_trip_training_with_state_and_optimizer() {
    check_round_trip(FileKind::Training, Some(training_state()), true);
}

#[test]
fn round_trip_training_with_optimizer_only() {
    check_round_trip(FileKind::Training, None, true);
}

#[test]
fn mlp_encoder_has_no_attention_tensors() {
    let mut config = tiny();
    config.encoder = EncoderKind::Mlp;
    let names: Vec<_> = expected_tensors(&config, FileKind::Inference)
        .map(|s| s.name)
        .collect();
    assert!(names.contains(&"sa_ap.f1"));
    assert!(!names
        .iter()
        .any(|n| n.ends_with(".wq") || n.contains(".ln1.")));
    let (file, _) = build(config, FileKind::Inference, None, false);
    assert_eq!(parse(&file).unwrap().config().encoder, EncoderKind::Mlp);
}

#[test]
fn expected_sets_match_format_md() {
    let config = ModelConfig::paper(5);
    let inference: Vec<_> = expected_tensors(&config, FileKind::Inference).collect();
    assert_eq!(inference.len(), 2 + 3 * 10 + 2);
    let training: Vec<_> = expected_tensors(&config, FileKind::Training).collect();
    assert_eq!(training.len(), 2 + 3 * 10 + 3 + 4);
    let shape = |set: &[TensorSpec], n: &str| {
        set.iter()
            .find(|s| s.name == n)
            .map(|s| s.shape.to_vec())
            .unwrap()
    };
    assert_eq!(shape(&inference, "enc_ap"), [640, 128]);
    assert_eq!(shape(&inference, "ca_ap.wo"), [128, 128]);
    assert_eq!(shape(&inference, "sa_cp.f1"), [128, 256]);
    assert_eq!(shape(&inference, "sa_cp.f2"), [256, 128]);
    assert_eq!(shape(&inference, "sa_ap.ln1.gain"), [128]);
    assert_eq!(shape(&inference, "gen.g1"), [256, 256]);
    assert_eq!(shape(&inference, "gen.g2_mu"), [256, 640]);
    assert_eq!(shape(&training, "gen.g2_sigma"), [256, 640]);
    assert_eq!(shape(&training, "dec_q.r1"), [640, 256]);
    assert_eq!(shape(&training, "dec_s.r2"), [256, 128]);
    assert_eq!(
        optional_shape(&config, FileKind::Training, "adam.v.gen.g1").map(|s| s.1.to_vec()),
        Some(vec![256, 256])
    );
    assert_eq!(
        optional_shape(&config, FileKind::Inference, "adam.v.gen.g1"),
        None
    );
    assert_eq!(
        optional_shape(&config, FileKind::Training, "adam.v.nope"),
        None
    );
}

#[test]
fn crc_is_the_zlib_one() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

// ---- one test per error -------------------------------------------------------------------

#[test]
fn error_truncated_prefix() {
    let file = valid_tiny();
    assert_eq!(
        parse(&file[..10]).unwrap_err(),
        FormatError::Truncated {
            needed: 24,
            found: 10
        }
    );
}

#[test]
fn error_truncated_payload() {
    let file = valid_tiny();
    let n = file.len() as u64;
    assert_eq!(
        parse(&file[..file.len() - 1]).unwrap_err(),
        FormatError::Truncated {
            needed: n,
            found: n - 1
        }
    );
}

#[test]
fn error_trailing_bytes() {
    let mut file = valid_tiny();
    file.push(0);
    let n = file.len() as u64;
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::TrailingBytes {
            expected: n - 1,
            found: n
        }
    );
}

#[test]
fn error_bad_magic() {
    let mut file = valid_tiny();
    file[5] = b'X';
    assert_eq!(parse(&file).unwrap_err(), FormatError::BadMagic);
}

#[test]
fn error_newer_version() {
    let mut file = valid_tiny();
    file[8] = 5;
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::UnsupportedVersion {
            found: 5,
            supported: 4
        }
    );
}

#[test]
fn error_nonzero_reserved() {
    let mut file = valid_tiny();
    file[11] = 1;
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::NonzeroReserved { value: 0x100 }
    );
}

#[test]
fn error_payload_length_not_multiple_of_4() {
    let mut file = valid_tiny();
    file[16] |= 1;
    assert!(matches!(
        parse(&file).unwrap_err(),
        FormatError::PayloadLengthNotMultipleOf4 { .. }
    ));
}

#[test]
fn error_checksum_mismatch() {
    let mut file = valid_tiny();
    let n = file.len();
    file[n - 10] ^= 0x40;
    let stored = u32::from_le_bytes(file[n - 4..].try_into().unwrap());
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::ChecksumMismatch {
            stored,
            computed: crc32(&file[..n - 4])
        }
    );
}

#[test]
fn error_nonzero_padding_after_header() {
    let mut file = valid_tiny();
    let h = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    assert_ne!((20 + h) % 64, 0, "this header leaves padding");
    file[20 + h] = 9;
    fix_crc(&mut file);
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::NonzeroPadding {
            offset: (20 + h) as u64
        }
    );
}

#[test]
fn error_nonzero_padding_between_tensors() {
    let file = valid_tiny();
    let parsed = parse(&file).unwrap();
    let start = file.len() - 4 - parsed.payload().len();
    // Tiny tensors are 16 or 32 floats, so each is followed by padding to 64 bytes.
    let entry = parsed.entry("sa_ap.ln1.gain").unwrap();
    let at = start + entry.offset as usize + 4 * 4;
    let mut file = file.clone();
    file[at] = 1;
    fix_crc(&mut file);
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::NonzeroPadding { offset: at as u64 }
    );
}

#[test]
fn error_malformed_header() {
    let file = valid_tiny();
    let payload = parse(&file).unwrap().payload().to_vec();
    // Kind discriminant 7 does not exist.
    let mut header = postcard::to_allocvec(&parse(&file).unwrap().to_header()).unwrap();
    header[0] = 7;
    assert!(matches!(
        parse(&assemble_raw(&header, &payload)).unwrap_err(),
        FormatError::MalformedHeader(_)
    ));
    // A header cut short.
    let header = postcard::to_allocvec(&parse(&file).unwrap().to_header()).unwrap();
    assert!(matches!(
        parse(&assemble_raw(&header[..header.len() / 2], &payload)).unwrap_err(),
        FormatError::MalformedHeader(_)
    ));
}

#[test]
fn error_header_length_mismatch() {
    let file = valid_tiny();
    let parsed = parse(&file).unwrap();
    let mut header = postcard::to_allocvec(&parsed.to_header()).unwrap();
    let used = header.len() as u32;
    header.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        parse(&assemble_raw(&header, parsed.payload())).unwrap_err(),
        FormatError::HeaderLengthMismatch {
            declared: used + 3,
            used
        }
    );
}

#[test]
fn error_invalid_config_each_reason() {
    type Edit = fn(&mut ModelConfig);
    let cases: [(Edit, ConfigError); 5] = [
        (
            |c| c.latent_dim = 0,
            ConfigError::ZeroDimension {
                field: "latent_dim",
            },
        ),
        (|c| c.ways = 0, ConfigError::ZeroDimension { field: "ways" }),
        (
            |c| c.heads = 3,
            ConfigError::HeadsDoNotDivideLatent {
                latent_dim: 4,
                heads: 3,
            },
        ),
        (
            |c| c.ln_epsilon = -1e-5,
            ConfigError::InvalidEpsilon { epsilon: -1e-5 },
        ),
        (|c| c.latent_dim = 1 << 31, ConfigError::TooLarge),
    ];
    for (edit, reason) in cases {
        let file = with_header(|h| edit(&mut h.config));
        assert_eq!(
            parse(&file).unwrap_err(),
            FormatError::InvalidConfig(reason)
        );
        let mut config = tiny();
        edit(&mut config);
        assert_eq!(
            FileBuilder::new(FileKind::Inference, config, provenance()).unwrap_err(),
            FormatError::InvalidConfig(reason)
        );
    }
    for epsilon in [f32::NAN, f32::INFINITY, 0.0] {
        let file = with_header(|h| h.config.ln_epsilon = epsilon);
        assert!(matches!(
            parse(&file).unwrap_err(),
            FormatError::InvalidConfig(ConfigError::InvalidEpsilon { .. })
        ));
    }
}

#[test]
fn error_training_state_in_inference_file() {
    let file = with_header(|h| h.training = Some(training_state()));
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::TrainingStateInInferenceFile
    );
    let config = tiny();
    let mut builder = FileBuilder::new(FileKind::Inference, config, provenance()).unwrap();
    builder.training_state(training_state());
    assert_eq!(
        builder.build().unwrap_err(),
        FormatError::TrainingStateInInferenceFile
    );
}

#[test]
fn error_tensor_out_of_bounds() {
    let file = with_header(|h| {
        let last = h.tensors.len() - 1;
        h.tensors[last].offset += 64 * 100;
    });
    assert!(matches!(
        parse(&file).unwrap_err(),
        FormatError::TensorOutOfBounds { name, .. } if name == "gen.g2_mu"
    ));
}

#[test]
fn error_misaligned_tensor() {
    let file = with_header(|h| h.tensors[3].offset += 4);
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::MisalignedTensor {
            name: name("sa_ap.wk"),
            offset: 5 * 64 + 4
        }
    );
}

#[test]
fn error_overlapping_tensors() {
    // enc_ap and enc_cp are 8x4 floats = 128 bytes: move enc_cp onto the second half of enc_ap.
    let file = with_header(|h| h.tensors[1].offset = 64);
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::OverlappingTensors {
            first: name("enc_ap"),
            second: name("enc_cp")
        }
    );
}

#[test]
fn error_duplicate_tensor() {
    let file = with_header(|h| h.tensors[1].name = name("enc_ap"));
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::DuplicateTensor {
            name: name("enc_ap")
        }
    );
    let config = tiny();
    let data = vec![0.0; 32];
    let mut builder = FileBuilder::new(FileKind::Inference, config, provenance()).unwrap();
    builder.tensor("enc_ap", &data).unwrap();
    assert_eq!(
        builder.tensor("enc_ap", &data).unwrap_err(),
        FormatError::DuplicateTensor {
            name: name("enc_ap")
        }
    );
}

#[test]
fn error_tensor_out_of_order() {
    // Two entries swapped in the table (each keeps its offset).
    let file = with_header(|h| h.tensors.swap(0, 1));
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::TensorOutOfOrder {
            previous: name("enc_cp"),
            name: name("enc_ap")
        }
    );
    // Names in canonical order, offsets swapped: enc_cp lies before enc_ap in the payload.
    let file = with_header(|h| {
        let (a, b) = (h.tensors[0].offset, h.tensors[1].offset);
        h.tensors[0].offset = b;
        h.tensors[1].offset = a;
    });
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::TensorOutOfOrder {
            previous: name("enc_ap"),
            name: name("enc_cp")
        }
    );
    // Optimizer state before a parameter: adam.m.* ranks after every required tensor.
    let (file, _) = build(tiny(), FileKind::Training, None, true);
    let parsed = parse(&file).unwrap();
    let mut header = parsed.to_header();
    let last_required = expected_tensors(&tiny(), FileKind::Training).count() - 1;
    header.tensors.swap(last_required, last_required + 1);
    let (a, b) = (
        header.tensors[last_required].offset,
        header.tensors[last_required + 1].offset,
    );
    header.tensors[last_required].offset = b;
    header.tensors[last_required + 1].offset = a;
    assert!(matches!(
        parse(&assemble(&header, parsed.payload())).unwrap_err(),
        FormatError::TensorOutOfOrder { previous, .. } if previous.starts_with(ADAM_M_PREFIX)
    ));
}

#[test]
fn error_too_many_tensors() {
    let file = valid_tiny();
    let parsed = parse(&file).unwrap();
    let header = parsed.to_header();
    // The table's entry count follows the header's other fields.
    let fields = postcard::to_allocvec(&(
        header.kind,
        header.config,
        &header.provenance,
        &header.training,
    ))
    .unwrap();
    let mut encoded = postcard::to_allocvec(&header).unwrap();
    assert_eq!(encoded[fields.len()] as usize, header.tensors.len());
    // 129 as a varint.
    encoded.splice(fields.len()..fields.len() + 1, [0x81, 0x01]);
    assert_eq!(
        parse(&assemble_raw(&encoded, parsed.payload())).unwrap_err(),
        FormatError::TooManyTensors { count: 129 }
    );
}

#[test]
fn error_trainer_options_too_long() {
    let (file, _) = build(tiny(), FileKind::Training, Some(training_state()), false);
    let parsed = parse(&file).unwrap();
    let header = parsed.to_header();
    let state = header.training.clone().unwrap();
    // The header encoded field by field, so the options can exceed the heapless capacity.
    let encode = |options: &[u8]| {
        postcard::to_allocvec(&(
            header.kind,
            header.config,
            &header.provenance,
            Some((
                state.step,
                state.best_val_accuracy,
                state.best_step,
                state.skipped_steps,
                state.rng_state,
                options,
            )),
            &header.tensors,
        ))
        .unwrap()
    };
    // A heapless::Vec cannot hold 1025 bytes; a std Vec has the same encoding.
    let options = vec![5u8; MAX_TRAINER_OPTIONS + 1];
    let encoded = encode(&options);
    assert_eq!(
        parse(&assemble_raw(&encoded, parsed.payload())).unwrap_err(),
        FormatError::TrainerOptionsTooLong { length: 1025 }
    );
    // At the limit the options are accepted and read back whole.
    let options = vec![5u8; MAX_TRAINER_OPTIONS];
    let encoded = encode(&options);
    let file = assemble_raw(&encoded, parsed.payload());
    let parsed = parse(&file).unwrap();
    assert_eq!(parsed.trainer_options(), Some(&options[..]));
    assert_eq!(
        &parsed.training().unwrap().trainer_options[..],
        &options[..]
    );
}

#[test]
fn error_text_too_long() {
    let file = valid_tiny();
    let parsed = parse(&file).unwrap();
    let header = parsed.to_header();
    let p = &header.provenance;
    let long = "x".repeat(MAX_TEXT_LEN + 1);
    let at_limit = "y".repeat(MAX_TEXT_LEN);
    for (field, dataset, tool) in [("dataset", &long, &at_limit), ("tool", &at_limit, &long)] {
        // A heapless::String cannot hold 65 bytes; a &str has the same encoding.
        let encoded = postcard::to_allocvec(&(
            header.kind,
            header.config,
            (
                dataset.as_str(),
                p.shots,
                p.steps,
                p.seed,
                p.validation,
                tool.as_str(),
                p.tool_version.as_str(),
            ),
            &header.training,
            &header.tensors,
        ))
        .unwrap();
        assert_eq!(
            parse(&assemble_raw(&encoded, parsed.payload())).unwrap_err(),
            FormatError::TextTooLong { field, length: 65 }
        );
    }
    // At the limit the texts are read back whole.
    let mut header = header.clone();
    header.provenance.dataset = at_limit.as_str().try_into().unwrap();
    let file = assemble(&header, parsed.payload());
    assert_eq!(
        parse(&file).unwrap().provenance().dataset,
        at_limit.as_str()
    );
}

/// The point of not decoding the table: a parsed file is small enough to live on an MCU's
/// stack (the owned header, with room for 128 entries, is not).
#[test]
fn parsed_file_is_small() {
    let parsed = core::mem::size_of::<ModelFile<'static>>();
    let header = core::mem::size_of::<Header>();
    assert!(parsed <= 512, "ModelFile is {parsed} bytes");
    assert!(header > 8 * 1024, "Header is {header} bytes");
}

#[test]
fn error_missing_tensor() {
    // Drop the entry and zero its bytes, which become padding.
    let file = with_parts(|h, payload| {
        let entry = h.tensors.remove(5);
        let start = entry.offset as usize;
        payload[start..start + 64].fill(0);
    });
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::MissingTensor {
            name: name("sa_ap.wo")
        }
    );
    let builder = FileBuilder::new(FileKind::Inference, tiny(), provenance()).unwrap();
    assert_eq!(
        builder.build().unwrap_err(),
        FormatError::MissingTensor {
            name: name("enc_ap")
        }
    );
    let bytes = valid_tiny();
    let parsed = parse(&bytes).unwrap();
    assert_eq!(
        parsed.tensor("gen.g2_sigma").unwrap_err(),
        FormatError::MissingTensor {
            name: name("gen.g2_sigma")
        }
    );
}

#[test]
fn error_unexpected_tensor() {
    // A training-only tensor in an inference file.
    let file = with_header(|h| h.tensors[0].name = name("dec_q.r1"));
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::UnexpectedTensor {
            name: name("dec_q.r1")
        }
    );
    // Optimizer state in an inference file.
    let file = with_header(|h| h.tensors[0].name = name("adam.m.enc_cp"));
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::UnexpectedTensor {
            name: name("adam.m.enc_cp")
        }
    );
    let mut builder = FileBuilder::new(FileKind::Inference, tiny(), provenance()).unwrap();
    assert_eq!(
        builder.tensor("gen.g2_sigma", &[0.0; 48]).unwrap_err(),
        FormatError::UnexpectedTensor {
            name: name("gen.g2_sigma")
        }
    );
}

#[test]
fn error_shape_mismatch() {
    let file = with_header(|h| {
        h.tensors[0].shape = heapless::Vec::from_slice(&[4, 8]).unwrap();
    });
    assert_eq!(
        parse(&file).unwrap_err(),
        FormatError::ShapeMismatch {
            name: name("enc_ap"),
            expected: heapless::Vec::from_slice(&[8, 4]).unwrap(),
            found: heapless::Vec::from_slice(&[4, 8]).unwrap(),
        }
    );
}

#[test]
fn error_not_zero_copy_on_unaligned_buffer() {
    let file = valid_tiny();
    let mut shifted = vec![0u8; file.len() + 1];
    // Place the file at an odd address.
    let offset = if shifted.as_ptr() as usize % 2 == 0 {
        1
    } else {
        0
    };
    shifted[offset..offset + file.len()].copy_from_slice(&file);
    let bytes = &shifted[offset..offset + file.len()];
    let parsed = parse(bytes).unwrap();
    assert_eq!(
        parsed.tensor("enc_ap").unwrap_err(),
        FormatError::NotZeroCopy {
            name: name("enc_ap")
        }
    );
    // Copying works at any alignment.
    let mut out = [0.0f32; 32];
    parsed.copy_tensor("enc_ap", &mut out).unwrap();
    assert_eq!(
        out.to_vec(),
        parse(&file).unwrap().to_vec("enc_ap").unwrap()
    );
}

#[test]
fn error_length_mismatch() {
    let file = valid_tiny();
    let parsed = parse(&file).unwrap();
    let mut out = [0.0f32; 31];
    assert_eq!(
        parsed.copy_tensor("enc_ap", &mut out).unwrap_err(),
        FormatError::LengthMismatch {
            name: name("enc_ap"),
            expected: 32,
            found: 31
        }
    );
    let mut builder = FileBuilder::new(FileKind::Inference, tiny(), provenance()).unwrap();
    assert_eq!(
        builder.tensor("enc_ap", &[0.0; 33]).unwrap_err(),
        FormatError::LengthMismatch {
            name: name("enc_ap"),
            expected: 32,
            found: 33
        }
    );
}

#[test]
fn errors_have_messages() {
    let msg = FormatError::MissingTensor {
        name: name("gen.g1"),
    }
    .to_string();
    assert!(msg.contains("gen.g1") && msg.contains("missing"), "{msg}");
    let msg = FormatError::InvalidConfig(ConfigError::ZeroDimension { field: "heads" }).to_string();
    assert!(msg.contains("heads"), "{msg}");
}

// ---- files on disk and in statics --------------------------------------------------------

#[test]
fn atomic_write_and_aligned_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.awgim");
    let (file, data) = build(ModelConfig::edge(1), FileKind::Inference, None, false);
    write_atomic(&path, b"old").unwrap();
    write_atomic(&path, &file).unwrap();
    let buf = read_aligned(&path).unwrap();
    assert_eq!(buf.as_ptr() as usize % 64, 0);
    assert_eq!(&buf[..], &file[..]);
    let parsed = parse(&buf).unwrap();
    assert_eq!(parsed.tensor(&data[3].0).unwrap(), &data[3].1[..]);
    // Only the target remains in the directory: no temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
    assert!(read_aligned(dir.path().join("absent")).is_err());
}

static EMBEDDED: &[u8] = include_model!("../FORMAT.md");

#[test]
fn include_model_is_aligned_and_exact() {
    assert_eq!(EMBEDDED.as_ptr() as usize % 64, 0);
    assert_eq!(EMBEDDED, include_bytes!("../FORMAT.md"));
    static A: Aligned<3> = Aligned([1, 2, 3]);
    assert_eq!(A.as_bytes(), &[1, 2, 3]);
    assert_eq!(core::mem::align_of::<Aligned<3>>(), 64);
}

// ---- robustness -----------------------------------------------------------------------------

#[test]
fn every_truncation_is_an_error() {
    let file = build(tiny(), FileKind::Training, Some(training_state()), true).0;
    for len in 0..file.len() {
        assert!(
            matches!(
                parse(&file[..len]).unwrap_err(),
                FormatError::Truncated { .. }
            ),
            "length {len}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn single_bit_flips_are_detected(position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut file = valid_tiny();
        let at = position.index(file.len());
        file[at] ^= 1 << bit;
        prop_assert!(parse(&file).is_err());
    }

    /// Damage inside the header with a repaired CRC reaches the decoder and the table checks.
    #[test]
    fn header_damage_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let mut file = valid_tiny();
        let h = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
        for (position, value) in edits {
            file[20 + position.index(h)] = value;
        }
        fix_crc(&mut file);
        let _ = parse(&file);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
        let mut prefixed = b"AWGIM\0MF\x01\0\0\0".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = parse(&prefixed);
    }
}

/// Beyond the paper: every classifier variant the trainer offers.
fn variant() -> ModelConfig {
    ModelConfig {
        classifier: Classifier {
            features: FeatureNorm::CenteredL2,
            weights: WeightsKind::Prototype,
            logits: LogitsKind::Cosine,
        },
        ..tiny()
    }
}

/// A model with the paper's classifier is a version-1 file, as before version 2 existed;
/// another classifier is a version-2 file that records it, with its two tensors.
#[test]
fn classifier_variants_are_version_2_and_paper_files_stay_version_1() {
    let paper = valid_tiny();
    assert_eq!(u16::from_le_bytes([paper[8], paper[9]]), PAPER_VERSION);
    assert_eq!(
        parse(&paper).unwrap().config().classifier,
        Classifier::PAPER
    );

    for kind in [FileKind::Inference, FileKind::Training] {
        let (bytes, data) = build(variant(), kind, None, false);
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), CLASSIFIER_VERSION);
        let file = parse(&bytes).unwrap();
        assert_eq!(file.config(), variant());
        for (name, values) in &data {
            assert_eq!(&file.to_vec(name).unwrap(), values, "{name}");
        }
        let names: Vec<&str> = expected_tensors(&variant(), kind).map(|s| s.name).collect();
        assert!(names.ends_with(&[tensors::FEATURE_CENTER, tensors::LOGIT_SCALE]));
        assert_eq!(
            required_tensor(&variant(), kind, tensors::LOGIT_SCALE).map(|(_, s)| s.shape),
            Some(heapless::Vec::from_slice(&[1]).unwrap())
        );
    }
    // Each tensor belongs to its variant only.
    let raw_dot = ModelConfig {
        classifier: Classifier {
            weights: WeightsKind::Prototype,
            ..Classifier::PAPER
        },
        ..tiny()
    };
    assert!(required_tensor(&raw_dot, FileKind::Inference, tensors::FEATURE_CENTER).is_none());
    assert!(required_tensor(&raw_dot, FileKind::Inference, tensors::LOGIT_SCALE).is_none());
}

/// A version-2 header whose classifier field holds no known variant is a typed error.
#[test]
fn error_unknown_classifier_value() {
    let (bytes, _) = build(variant(), FileKind::Inference, None, false);
    let file = parse(&bytes).unwrap();
    let header = file.to_header();
    let with_classifier = |fields: [u8; 3]| {
        let summary = (
            header.kind,
            header.config,
            &header.provenance,
            &header.training,
        );
        let mut encoded = postcard::to_allocvec(&summary).unwrap();
        encoded.extend_from_slice(&fields);
        let encoded = postcard::to_extend(&header.tensors, encoded).unwrap();
        let mut out = assemble_raw(&encoded, file.payload());
        out[8] = 2;
        fix_crc(&mut out);
        out
    };
    // CenteredL2, Prototype, Cosine: the writer's own bytes.
    assert_eq!(with_classifier([1, 1, 1]), bytes);
    // No logits variant 7.
    let err = parse(&with_classifier([1, 1, 7])).unwrap_err();
    assert!(matches!(err, FormatError::MalformedHeader(_)), "{err:?}");
}

/// A lookup compares whole names: a prefix, an extension or a differently cased name of a
/// tensor is not that tensor, in a version-1 and a version-3 table alike.
#[test]
fn lookups_compare_whole_names() {
    let file = valid_tiny();
    let parsed = parse(&file).unwrap();
    for entry in parsed.entries() {
        assert_eq!(parsed.entry(&entry.name).unwrap(), entry);
    }
    for missing in ["enc_a", "enc_ap.", "ENC_AP", "", "gen.g2_mu.x"] {
        assert!(!parsed.contains(missing), "{missing}");
        assert_eq!(
            parsed.tensor(missing).unwrap_err(),
            FormatError::MissingTensor {
                name: name(missing)
            }
        );
    }
}
