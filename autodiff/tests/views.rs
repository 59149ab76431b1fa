//! `View` is luminal's `ShapeTracker` with concrete sizes: for random chains of permute,
//! expand, slice and pad, the strides and valid ranges it resolves to must address exactly
//! the elements luminal's own index and validity expressions do, and converting to a
//! tracker and back must be lossless.

use autodiff::{View, MAX_RANK};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn random_view(rng: &mut Xoshiro256PlusPlus) -> View {
    let rank = rng.gen_range(1..=3);
    let shape: Vec<usize> = (0..rank).map(|_| rng.gen_range(1..5)).collect();
    let mut v = View::contiguous(&shape).unwrap();
    for _ in 0..rng.gen_range(0..5) {
        let r = v.rank();
        match rng.gen_range(0..4) {
            0 => {
                let mut axes: Vec<usize> = (0..r).collect();
                for i in (1..r).rev() {
                    axes.swap(i, rng.gen_range(0..=i));
                }
                v = v.permute(&axes);
            }
            1 if r < MAX_RANK => v = v.expand(rng.gen_range(0..=r), rng.gen_range(1..4)),
            2 => {
                let axis = rng.gen_range(0..r);
                let len = v.axis_len(axis);
                let (start, end) = if rng.gen_bool(0.5) {
                    (rng.gen_range(0..len), len)
                } else {
                    (0, rng.gen_range(1..=len))
                };
                if v.can_slice(axis, start, end) && start < end {
                    v = v.slice(axis, start, end);
                }
            }
            _ => {
                let axis = rng.gen_range(0..r);
                if v.can_pad(axis) {
                    v = v.pad(axis, rng.gen_range(0..3), rng.gen_range(0..3));
                }
            }
        }
    }
    v
}

#[test]
fn access_matches_luminal_index_and_valid_expressions() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    for _ in 0..2000 {
        let v = random_view(&mut rng);
        let st = v.to_tracker();
        let (index, valid) = (st.index_expression(), st.valid_expression());
        assert_eq!(st.n_elements().to_usize(), Some(v.numel()), "{v:?}");
        let mut seen = 0;
        v.access().for_each(|i, off| {
            seen += 1;
            let lum_valid = valid.exec_single_var(i) != 0;
            assert_eq!(off.is_some(), lum_valid, "validity of element {i} of {v:?}");
            if let Some(o) = off {
                assert_eq!(
                    o,
                    index.exec_single_var(i),
                    "offset of element {i} of {v:?}"
                );
                assert!(o < v.physical_numel());
            }
        });
        assert_eq!(seen, v.numel());
    }
}

#[test]
fn tracker_round_trip_is_lossless() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    for _ in 0..500 {
        let v = random_view(&mut rng);
        assert_eq!(View::from_tracker(&v.to_tracker()).unwrap(), v);
        assert_eq!(
            v.to_tracker()
                .shape()
                .iter()
                .map(|e| e.to_usize().unwrap())
                .collect::<Vec<_>>(),
            v.shape()
        );
    }
}

#[test]
fn rank_limit_is_an_error() {
    assert!(View::contiguous(&[1; MAX_RANK + 1]).is_err());
}
