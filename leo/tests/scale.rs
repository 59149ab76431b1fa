//! The LEO reader on large files written here in Python 2's exact layout
//! (protocol 2, SHORT_BINSTRING keys, one BINSTRING of raw float32 data) or
//! with the raw data as Python 3 writes it (`_codecs.encode`), with classes
//! interleaved so that grouping moves every row.
//!
//! The ignored test is the measurement program for the reader's speed on a
//! file the size of tieredImageNet's train split:
//! `cargo test --release -p leo --test scale -- --ignored --nocapture`

use std::time::Instant;

use leo::{read_classes, Classes};

fn value(row: usize, col: usize) -> f32 {
    ((row * 131 + col * 17) % 2003) as f32 * 0.001 - 1.0
}

fn class_of(row: usize, classes: usize) -> usize {
    (row * 7 + row / 3) % classes
}

/// `_reconstruct(ndarray, (0,), 'b')` as Python 2 writes it (no memo).
fn reconstruct(p: &mut Vec<u8>) {
    p.extend_from_slice(
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R",
    );
}

/// `numpy.dtype(code, 0, 1)` with its BUILD state.
fn dtype(p: &mut Vec<u8>, code: &[u8], order: u8, flags: u8) {
    p.extend_from_slice(b"cnumpy\ndtype\nU\x02");
    p.extend_from_slice(code);
    p.extend_from_slice(b"K\x00K\x01\x87R(K\x03U\x01");
    p.push(order);
    p.extend_from_slice(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK");
    p.push(flags);
    p.extend_from_slice(b"tb");
}

/// How the raw float data is written.
#[derive(Clone, Copy)]
enum Raw {
    /// Python 2: one BINSTRING.
    BinString,
    /// Python 3, protocol 2: `_codecs.encode(<BINUNICODE text>, "latin1")`.
    CodecsEncode,
}

/// A LEO dict pickle with `rows` examples of `dim` features in `classes` classes.
fn leo_pickle(rows: usize, dim: usize, classes: usize, raw: Raw) -> Vec<u8> {
    let mut p = Vec::with_capacity(rows * (dim * 4 + 40) + 1000);
    p.extend_from_slice(b"\x80\x02}q\x01(U\x04keys");
    reconstruct(&mut p);
    p.extend_from_slice(b"(K\x01J");
    p.extend_from_slice(&(rows as i32).to_le_bytes());
    p.push(0x85);
    dtype(&mut p, b"O8", b'|', 63);
    p.extend_from_slice(b"\x89](");
    for r in 0..rows {
        let c = class_of(r, classes);
        let key = format!("{r}-n{c:08}-n{c:08}_{r:06}.JPEG");
        p.push(b'U');
        p.push(key.len() as u8);
        p.extend_from_slice(key.as_bytes());
    }
    p.extend_from_slice(b"etbU\x0aembeddings");
    reconstruct(&mut p);
    p.extend_from_slice(b"(K\x01J");
    p.extend_from_slice(&(rows as i32).to_le_bytes());
    p.push(b'J');
    p.extend_from_slice(&(dim as i32).to_le_bytes());
    p.push(0x86);
    dtype(&mut p, b"f4", b'<', 0);
    p.push(0x89);
    let data = (0..rows).flat_map(|r| (0..dim).flat_map(move |j| value(r, j).to_le_bytes()));
    match raw {
        Raw::BinString => {
            p.push(b'T');
            p.extend_from_slice(&((rows * dim * 4) as u32).to_le_bytes());
            p.extend(data);
        }
        Raw::CodecsEncode => {
            // Each byte is a code point below 256, written as UTF-8.
            let text: String = data.map(char::from).collect();
            p.extend_from_slice(b"c_codecs\nencode\nX");
            p.extend_from_slice(&(text.len() as u32).to_le_bytes());
            p.extend_from_slice(text.as_bytes());
            p.extend_from_slice(b"X\x06\x00\x00\x00latin1\x86R");
        }
    }
    p.extend_from_slice(b"tbu.");
    p
}

/// Checks that every class holds its rows in file order.
fn check(split: &Classes, rows: usize, dim: usize, classes: usize) {
    assert_eq!(split.counts.iter().sum::<usize>(), rows);
    assert_eq!(split.data.len(), rows * dim);
    assert_eq!(split.dim, dim);
    let names = split.names.as_deref().unwrap();
    // The next row of each class: its first row, in class-major order.
    let mut next: Vec<usize> = split
        .counts
        .iter()
        .scan(0, |start, &n| {
            *start += n;
            Some(*start - n)
        })
        .collect();
    let index: std::collections::HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    for r in 0..rows {
        let name = format!("n{:08}", class_of(r, classes));
        let c = index[name.as_str()];
        let row = &split.data[next[c] * dim..(next[c] + 1) * dim];
        next[c] += 1;
        assert!(
            row.iter().enumerate().all(|(j, &v)| v == value(r, j)),
            "row {r}"
        );
    }
    // Classes in order of first appearance.
    let firsts: Vec<String> = (0..rows)
        .map(|r| format!("n{:08}", class_of(r, classes)))
        .fold(Vec::new(), |mut seen, n| {
            if !seen.contains(&n) {
                seen.push(n);
            }
            seen
        });
    assert_eq!(names, &firsts[..]);
}

#[test]
fn a_larger_interleaved_file_is_grouped_in_file_order() {
    let (rows, dim, classes) = (6000, 640, 97);
    for raw in [Raw::BinString, Raw::CodecsEncode] {
        let bytes = leo_pickle(rows, dim, classes, raw);
        let split = read_classes(&bytes).unwrap();
        check(&split, rows, dim, classes);
    }
}

#[test]
#[ignore = "measurement: builds a 1.17 GB pickle (tieredImageNet train size) and reads it"]
fn measure_tiered_imagenet_sized_file() {
    let (rows, dim, classes) = (448_695, 640, 351);
    let bytes = leo_pickle(rows, dim, classes, Raw::CodecsEncode);
    println!(
        "Python 3 protocol 2 pickle of {:.2} GB",
        bytes.len() as f64 / 1e9
    );
    let start = Instant::now();
    let split = read_classes(&bytes).unwrap();
    println!("read_classes (in memory): {:.2?}", start.elapsed());
    check(&split, rows, dim, classes);
    drop((split, bytes));

    let bytes = leo_pickle(rows, dim, classes, Raw::BinString);
    println!(
        "Python 2 protocol 2 pickle of {:.2} GB",
        bytes.len() as f64 / 1e9
    );
    let start = Instant::now();
    let split = read_classes(&bytes).unwrap();
    println!(
        "read_classes (in memory): {rows} x {dim}, {} classes: {:.2?}",
        split.counts.len(),
        start.elapsed()
    );
    check(&split, rows, dim, classes);
    drop(split);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train_embeddings.pkl");
    std::fs::write(&path, &bytes).unwrap();
    drop(bytes);
    let start = Instant::now();
    let split = read_classes(&std::fs::read(&path).unwrap()).unwrap();
    println!(
        "read + read_classes (file, page cache warm): {:.2?}",
        start.elapsed()
    );
    check(&split, rows, dim, classes);
}
