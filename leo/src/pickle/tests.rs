//! Unit tests of the pickle machine on hand-written opcode sequences.

use super::numpy::Dtype;
use super::*;

fn parse(bytes: &[u8]) -> Result<Pickle<'_>, PickleError> {
    Pickle::parse(bytes)
}

fn list_items<'p>(p: &'p Pickle<'_>) -> &'p [Value] {
    match p.object(p.root()) {
        Some(Object::List(items)) => items,
        _ => panic!("root is not a list"),
    }
}

#[test]
fn memo_references_share_the_built_dtype() {
    // [dtype('f4') with BUILD state byte order '>', the same object via BINGET]
    let mut b = b"\x80\x02]q\x00(cnumpy\ndtype\nq\x01U\x02f4K\x00K\x01\x87Rq\x02".to_vec();
    b.extend_from_slice(b"(K\x03U\x01>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
    b.extend_from_slice(b"h\x02e.");
    let p = parse(&b).unwrap();
    let items = list_items(&p);
    assert_eq!(items.len(), 2);
    assert_eq!(items[0], items[1]);
    match p.object(items[1]) {
        Some(Object::Dtype(d)) => {
            assert_eq!(d.order, ByteOrder::Big);
            assert_eq!((d.kind, d.itemsize), (b'f', 4));
        }
        other => panic!("expected a dtype, got {other:?}"),
    }
}

#[test]
fn scalars_of_every_protocol() {
    // protocol 0 list: INT True, INT -7, LONG 123L, FLOAT, STRING with
    // escapes, UNICODE; then LONG1 -2, LONG1 2**63-1, BININT2, BINFLOAT.
    let mut b = b"(lp0\nI01\naI-7\naL123L\naF2.5\naS'a\\'\\x00'\naVx\\u00e9\na".to_vec();
    b.extend_from_slice(b"\x8a\x01\xfea\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7fa");
    b.extend_from_slice(b"M\x34\x12aG\x3f\xf8\x00\x00\x00\x00\x00\x00a.");
    let p = parse(&b).unwrap();
    let items = list_items(&p);
    assert_eq!(items[0], Value::Bool(true));
    assert_eq!(items[1], Value::Int(-7));
    assert_eq!(items[2], Value::Int(123));
    assert_eq!(items[3], Value::Float(2.5));
    assert_eq!(p.string(items[4]), Some(&b"a'\x00"[..]));
    // U+00E9 stays latin-1.
    assert_eq!(p.string(items[5]), Some(&b"x\xe9"[..]));
    assert_eq!(items[6], Value::Int(-2));
    assert_eq!(items[7], Value::Int(i64::MAX));
    assert_eq!(items[8], Value::Int(0x1234));
    assert_eq!(items[9], Value::Float(1.5));
}

#[test]
fn too_large_integers_are_refused() {
    let b = b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.";
    assert!(matches!(
        parse(b),
        Err(PickleError::Malformed { offset: 0, .. })
    ));
    let b =
        b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\xff.";
    // the first is i64::MIN (fits); the second is positive 2**63 - 1 + ... with
    // a sign byte of 0xff: negative and too large.
    assert!(matches!(
        parse(b),
        Err(PickleError::Malformed { offset: 10, .. })
    ));
}

#[test]
fn pop_removes_a_value_or_the_mark() {
    // MARK K1 POP POP(mark) K2 STOP -> 2
    let p = parse(b"(K\x010\x30K\x02.").unwrap();
    assert_eq!(p.root(), Value::Int(2));
    // POP_MARK discards the frame.
    let p = parse(b"K\x07(K\x01K\x021.").unwrap();
    assert_eq!(p.root(), Value::Int(7));
}

#[test]
fn structural_errors_name_the_offset() {
    let cases: &[(&[u8], usize)] = &[
        (b"\x80\x02t.", 2),                 // TUPLE without MARK
        (b"\x80\x02(a.", 3),                // APPEND on an empty frame
        (b"\x80\x02h\x05.", 2),             // BINGET of an undefined memo key
        (b"K\x01a.", 2),                    // APPEND to an int
        (b"K\x01K\x02R.", 4),               // REDUCE of an int
        (b"}K\x01u.", 3),                   // SETITEMS without MARK
        (b"(K\x01K\x02K\x03d.", 7),         // odd number of dict items
        (b"S'abc\n.", 0),                   // unterminated STRING
        (b"Iabc\n.", 0),                    // bad INT literal
        (b"X\x02\x00\x00\x00\xff\xfe.", 0), // invalid UTF-8
    ];
    for &(bytes, offset) in cases {
        match parse(bytes) {
            Err(PickleError::Malformed { offset: o, .. }) => assert_eq!(o, offset, "{bytes:?}"),
            other => panic!("{bytes:?}: expected Malformed, got {:?}", other.err()),
        }
    }
}

#[test]
fn unsupported_opcodes_protocols_and_callables() {
    assert_eq!(
        parse(b"\x80\x02K\x01\xff.").err(),
        Some(PickleError::UnsupportedOpcode {
            opcode: 0xff,
            name: "unknown",
            offset: 4
        })
    );
    assert!(matches!(
        parse(b"\x80\x02ccopy_reg\n_reconstructor\n)\x81."),
        Err(PickleError::UnsupportedOpcode { name: "NEWOBJ", .. })
    ));
    assert_eq!(
        parse(b"\x80\x06K\x01.").err(),
        Some(PickleError::UnsupportedProtocol {
            protocol: 6,
            offset: 0
        })
    );
    assert_eq!(
        parse(b"\x80\x02cos\nsystem\nU\x02ls\x85R.").err(),
        Some(PickleError::UnsupportedCallable {
            name: "os.system".into(),
            offset: 18
        })
    );
}

#[test]
fn lengths_past_the_end_are_truncation() {
    for bytes in [
        &b"T\xff\xff\xff\x7fabc"[..],
        b"X\x10\x00\x00\x00abc",
        b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x8b\xff\xff\xff\xff",
        b"U\x05ab",
        b"K",
        b"K\x01",
    ] {
        assert!(
            matches!(parse(bytes), Err(PickleError::Truncated { end, .. }) if end == bytes.len()),
            "{bytes:?}"
        );
    }
}

#[test]
fn codecs_encode_round_trips_latin1() {
    // _codecs.encode('\u00ff\u0000A', 'latin1') as Python 3 protocol 2 writes it.
    let b =
        b"\x80\x02c_codecs\nencode\nX\x04\x00\x00\x00\xc3\xbf\x00AX\x06\x00\x00\x00latin1\x86R.";
    let p = parse(b).unwrap();
    assert_eq!(p.string(p.root()), Some(&b"\xff\x00A"[..]));
    // A code point above 255 cannot be latin-1.
    let b = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00\xe2\x82\xacX\x06\x00\x00\x00latin1\x86R.";
    assert!(matches!(parse(b), Err(PickleError::Malformed { .. })));
}

#[test]
fn array_data_must_match_shape() {
    // _reconstruct(ndarray, (0,), 'b') BUILT with shape (2,) f4 but 4 bytes of data.
    let mut b =
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
            .to_vec();
    b.extend_from_slice(b"(K\x01K\x02\x85cnumpy\ndtype\nU\x02f4K\x00K\x01\x87R");
    b.extend_from_slice(b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
    let at = b.len() + 8;
    b.extend_from_slice(b"\x89U\x04\x00\x00\x80?tb.");
    match parse(&b) {
        Err(PickleError::Malformed { offset, problem }) => {
            assert_eq!(offset, at);
            assert!(problem.contains("needs 8"), "{problem}");
        }
        other => panic!("expected Malformed, got {:?}", other.err()),
    }
    // With 8 bytes it builds.
    let n = b.len();
    b.truncate(n - 10);
    b.extend_from_slice(b"\x89U\x08\x00\x00\x80?\x00\x00\x00@tb.");
    let p = parse(&b).unwrap();
    let a = p.array(p.root()).unwrap();
    assert_eq!(a.shape, vec![2]);
    assert_eq!(p.raw_data(a), Some(&b"\x00\x00\x80?\x00\x00\x00@"[..]));
}

#[test]
fn dtype_type_strings() {
    let d = Dtype::from_typestr(b"U9").unwrap();
    assert_eq!((d.kind, d.itemsize), (b'U', 36));
    let d = Dtype::from_typestr(b">f8").unwrap();
    assert_eq!((d.kind, d.itemsize, d.order), (b'f', 8, ByteOrder::Big));
    assert_eq!(
        Dtype::from_typestr(b"O8").unwrap().order,
        ByteOrder::NotApplicable
    );
    assert_eq!(Dtype::from_typestr(b"f4").unwrap().to_string(), "<f4");
    for bad in [&b""[..], b"q4", b"f", b"fx", b"U99999999999999999999"] {
        assert!(Dtype::from_typestr(bad).is_none(), "{bad:?}");
    }
}
