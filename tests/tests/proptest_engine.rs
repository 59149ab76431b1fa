//! Property tests of the engine on the edge configurations, through the fuzz harness
//! `tests::fuzzing::engine_edge`: random NaN, infinite, extreme and ordinary values written at
//! random places of the support features, the queries and the weights. The harness panics
//! unless `load` answers what the file allows, `prepare` and `classify` refuse exactly the
//! first non-finite input (row and column), and every other call gives finite logits naming
//! the largest class or a typed `NonFinite` error. And enrollment: any sequence of labelled
//! rows is accepted or refused with the typed error its label and the counts call for.

use proptest::prelude::*;
use tests::fuzzing::{engine_edge, Edit, EditTarget, EngineCase};

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        // NaN with any payload and sign.
        (any::<bool>(), 1u32..(1 << 23)).prop_map(|(negative, payload)| f32::from_bits(
            u32::from(negative) << 31 | 0x7f80_0000 | payload
        )),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        prop_oneof![Just(f32::MAX), Just(-f32::MAX), Just(1e30), Just(-1e20)],
        prop_oneof![Just(f32::MIN_POSITIVE), Just(1e-45), Just(-0.0)],
        -10.0f32..10.0,
    ]
}

fn case() -> impl Strategy<Value = EngineCase> {
    (any::<bool>(), any::<bool>(), 0u8..4, 0u8..4).prop_map(
        |(five_shot, training, model_seed, task_seed)| EngineCase {
            five_shot,
            training,
            keep_crc: false,
            model_seed,
            task_seed,
        },
    )
}

/// Edits of the features: one value per edit, at any feature.
fn feature_edit() -> impl Strategy<Value = Edit> {
    (
        prop_oneof![Just(EditTarget::Support), Just(EditTarget::Queries)],
        0u32..(25 * 64),
        value(),
    )
        .prop_map(|(target, feature, value)| Edit {
            target,
            offset: 4 * feature,
            count: 1,
            value: value.to_le_bytes(),
        })
}

/// Edits of the weights: a run of equal values anywhere in the file (mostly the payload).
fn weight_edit() -> impl Strategy<Value = Edit> {
    (any::<u32>(), 1u16..2048, value()).prop_map(|(offset, count, value)| Edit {
        target: EditTarget::Model,
        // Whole floats: the payload starts at a multiple of 64.
        offset: offset & !3,
        count,
        value: value.to_le_bytes(),
    })
}

fn input(case: EngineCase, edits: &[Edit]) -> Vec<u8> {
    let mut out = case.encode().to_vec();
    for edit in edits {
        out.extend_from_slice(&edit.encode());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn non_finite_and_extreme_features_are_refused_or_give_finite_logits(
        case in case(),
        edits in prop::collection::vec(feature_edit(), 1..4),
    ) {
        engine_edge(&input(case, &edits));
    }

    #[test]
    fn extreme_weights_give_finite_logits_or_a_typed_error(
        case in case(),
        edits in prop::collection::vec(weight_edit(), 1..4),
    ) {
        engine_edge(&input(case, &edits));
    }
}

/// One enrollment step: a label (sometimes past the last class) and a support row.
fn push() -> impl Strategy<Value = (usize, usize)> {
    (0usize..7, 0usize..25)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Enrollment on the edge 5-shot model takes any sequence of labelled rows without a
    /// panic: a label past the last class is `Class`, a class's sixth shot `ClassFull`, and
    /// `prepare` succeeds exactly when every class has its 5 shots (else `Incomplete` naming
    /// the first class short of them); the counts it reports are those accepted.
    #[test]
    fn enrollment_takes_any_sequence_of_rows(pushes in prop::collection::vec(push(), 0..40)) {
        let config = formats::ModelConfig::edge(5);
        let file = formats::AlignedBuf::from_bytes(
            &tests::random::RandomModel::new(config, 3).build().unwrap(),
        );
        let task = tests::random::RandomTask::new(&config, 3, 1, 0.5);
        let rows: Vec<[f32; 64]> = tests::random::to_arrays(&task.support);
        let model = engine::Edge5Shot::load(&file).unwrap();
        let mut workspace = Box::new(engine::Edge5ShotWorkspace::new());
        let mut enrollment = model.enroll(&mut workspace).unwrap();
        let mut shots = [0usize; 5];
        for (class, row) in pushes {
            let result = enrollment.push(class, &rows[row]);
            match class {
                c if c >= 5 => prop_assert_eq!(
                    result.err(),
                    Some(engine::EngineError::Class { class, ways: 5 })
                ),
                c if shots[c] == 5 => prop_assert_eq!(
                    result.err(),
                    Some(engine::EngineError::ClassFull { class, shots: 5 })
                ),
                c => {
                    shots[c] += 1;
                    prop_assert_eq!(result.ok(), Some(shots.iter().all(|&s| s == 5)));
                }
            }
            for (c, &s) in shots.iter().enumerate() {
                prop_assert_eq!(enrollment.shots(c), s);
            }
        }
        match shots.iter().position(|&s| s != 5) {
            Some(class) => prop_assert_eq!(
                enrollment.prepare().err(),
                Some(engine::EngineError::Incomplete { class, shots: shots[class], needed: 5 })
            ),
            None => {
                let mut task = enrollment.prepare().unwrap();
                let p = task.classify(&rows[0]).unwrap();
                prop_assert!(p.logits.iter().all(|l| l.is_finite()));
            }
        }
    }
}
