#!/usr/bin/env python3
"""Generates the pickle fixtures under leo/tests/fixtures/ (except leo_py2/,
which is a copy of the shared LEO-layout fixtures written by Python 2) and the
.npy / .npz fixtures under trainer/tests/fixtures/.

Every generated file holds the same examples as leo_py2/ (or a deliberate
defect), so every reader test compares against leo_py2/expected.npz.
Needs Python 3 with numpy >= 2 (`pip install numpy`); the tests themselves
need no Python. Run from the repository root:  python3 scripts/make-fixtures.py
Output is deterministic: re-running it reproduces the committed files.

    python3 scripts/make-fixtures.py leo-layout NPY_DIR OUT_DIR

instead writes a LEO-layout data set (not a fixture): NPY_DIR's {train,val,test}.npy
(classes x examples x D, as `trainer synthetic` writes them) as OUT_DIR's
{train,val,test}_embeddings.pkl in the layout of DeepMind LEO's files, written as LEO's
Python 2 did (protocol 2, keys as byte strings, numpy.core globals): a dict with
"embeddings" (examples x D float32, class-major), "labels" (int64 class index) and "keys"
("<row>-<class>-<class>_<example>.JPEG", with made-up ImageNet-style class ids n9SCCCCCC,
S the split's number). Used for the int8 accuracy table of docs/training.md.
"""

import collections
import io
import os
import pickle
import struct
import sys

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# Pickles (the leo crate's tests) and .npy / .npz files (the trainer's).
LEO_ROOT = os.path.join(REPO, "leo", "tests", "fixtures")
NPY_ROOT = os.path.join(REPO, "trainer", "tests", "fixtures")
SPLITS = ("train", "val", "test")

assert int(np.__version__.split(".")[0]) >= 2, "numpy >= 2 needed (pickles name numpy._core)"


def out(*parts, root=LEO_ROOT):
    path = os.path.join(root, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def load_py2(split):
    with open(os.path.join(LEO_ROOT, "leo_py2", f"{split}_embeddings.pkl"), "rb") as f:
        return pickle.load(f, encoding="latin1")


def py2_repr(b):
    """Python 2's repr() of a str, as its pickle protocol 0 writes STRING."""
    quote = b'"' if (b"'" in b and b'"' not in b) else b"'"
    res = bytearray(quote)
    for c in b:
        ch = bytes([c])
        if ch == quote or ch == b"\\":
            res += b"\\" + ch
        elif ch == b"\t":
            res += b"\\t"
        elif ch == b"\n":
            res += b"\\n"
        elif ch == b"\r":
            res += b"\\r"
        elif c < 0x20 or c >= 0x7F:
            res += b"\\x%02x" % c
        else:
            res += ch
    return bytes(res + quote)


class Py2Pickler(pickle._Pickler):
    """Emulates Python 2.7 + numpy 1.x: `str` (here: bytes and str) as
    STRING / SHORT_BINSTRING / BINSTRING, globals from `numpy.core`."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if self.proto == 0:
            self.write(b"S" + py2_repr(raw) + b"\n")
        elif len(raw) < 256:
            self.write(b"U" + bytes([len(raw)]) + raw)
        else:
            self.write(b"T" + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        module = "__builtin__" if module == "builtins" else module
        self.write(b"c" + module.encode() + b"\n" + (name or obj.__qualname__).encode() + b"\n")
        self.memoize(obj)


class Numpy1Pickler(pickle._Pickler):
    """Python 3 with numpy 1.x: `_codecs.encode` bytes, `numpy.core` globals."""

    def save_global(self, obj, name=None):
        if obj.__module__.startswith("numpy._core"):
            module = obj.__module__.replace("numpy._core", "numpy.core")
            self.write(b"c" + module.encode() + b"\n" + (name or obj.__qualname__).encode() + b"\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def dump(obj, path, protocol, pickler=None):
    buf = io.BytesIO()
    if pickler is None:
        pickle.dump(obj, buf, protocol=protocol)
    else:
        pickler(buf, protocol=protocol).dump(obj)
    data = buf.getvalue()
    check = pickle.loads(data, encoding="latin1")
    assert_same(obj, check)
    with open(path, "wb") as f:
        f.write(data)


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), (a.keys(), b.keys())
        for k in a:
            assert_same(a[k], b[k])
    else:
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "OSU":
            a = np.array([x.decode("latin1") if isinstance(x, bytes) else x for x in a.ravel()])
            b = np.array([x.decode("latin1") if isinstance(x, bytes) else x for x in b.ravel()])
        assert a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def with_bytes_keys(d):
    """Python 2 strs: the keys as bytes objects."""
    d = dict(d)
    d["keys"] = np.array([k.encode("latin1") for k in d["keys"]], dtype=object)
    return d


def main():
    leo = {s: load_py2(s) for s in SPLITS}
    expected = np.load(os.path.join(LEO_ROOT, "leo_py2", "expected.npz"))

    # Python 3 (numpy 2) protocol 2: the likely way a Python 3 user re-saves LEO's files.
    for s in SPLITS:
        dump(leo[s], out("leo_py3_p2", f"{s}_embeddings.pkl"), 2)

    # One split each for the other writers and protocols.
    train = leo["train"]
    for p in (0, 1, 4, 5):
        dump(train, out(f"leo_py3_p{p}", "train_embeddings.pkl"), p)
    for p in (0, 1, 2):
        dump(with_bytes_keys(train), out(f"leo_py2_p{p}", "train_embeddings.pkl"), p, Py2Pickler)
    dump(train, out("leo_py3_numpy1_p2", "train_embeddings.pkl"), 2, Numpy1Pickler)

    # Layout variants of the train split (protocol 2 unless noted).
    variants = {
        "float64": dict(train, embeddings=train["embeddings"].astype(np.float64)),
        "fortran": dict(train, embeddings=np.asfortranarray(train["embeddings"])),
        "big_endian": dict(train, embeddings=train["embeddings"].astype(">f4")),
        "big_endian_f64_fortran": dict(
            train, embeddings=np.asfortranarray(train["embeddings"].astype(">f8"))
        ),
        "keys_unicode_array": dict(train, keys=train["keys"].astype("U")),
        "keys_bytes_array": dict(train, keys=train["keys"].astype("S")),
    }
    for name, d in variants.items():
        dump(d, out("leo_variants", f"{name}.pkl"), 2)
    dump(variants["fortran"], out("leo_variants", "fortran_p0.pkl"), 0)

    # Defective files: each must be refused with its own error.
    n = len(train["keys"])
    keys = list(train["keys"])
    bad_key = keys.copy()
    bad_key[3] = "3-" + bad_key[3]
    mismatch = keys.copy()
    mismatch[5] = mismatch[5].replace("-n0", "-n1", 1)
    duplicate = keys.copy()
    duplicate[7] = duplicate[6].replace("6-", "7-", 1)
    nan = train["embeddings"].copy()
    nan[41, 3] = np.nan
    errors = {
        "missing_embeddings": {"keys": train["keys"], "labels": train["labels"]},
        "missing_keys": {"labels": train["labels"], "embeddings": train["embeddings"]},
        "length_mismatch": dict(train, keys=train["keys"][: n - 1]),
        "bad_key": dict(train, keys=np.array(bad_key, dtype=object)),
        "class_mismatch": dict(train, keys=np.array(mismatch, dtype=object)),
        "duplicate_image": dict(train, keys=np.array(duplicate, dtype=object)),
        "int_embeddings": dict(train, embeddings=(train["embeddings"] * 100).astype(np.int32)),
        "embeddings_3d": dict(train, embeddings=train["embeddings"].reshape(n, 4, 4)),
        "nan_embedding": dict(train, embeddings=nan),
        "keys_not_strings": dict(train, keys=np.arange(n, dtype=object)),
    }
    for name, d in errors.items():
        dump(d, out("leo_errors", f"{name}.pkl"), 2)
    dump([1, 2, 3], out("leo_errors", "a_list.pkl"), 2)
    with open(out("leo_errors", "ordered_dict.pkl"), "wb") as f:
        pickle.dump(collections.OrderedDict(train), f, protocol=2)

    # The AWGIM repository's layout: one (classes, samples, D) array per split.
    dump(expected["train"], out("awgim_repacked", "train_embeddings.pkl"), 2, Py2Pickler)
    dump(expected["val"], out("awgim_repacked", "val_embeddings.pkl"), 2)
    dump(np.asfortranarray(expected["test"]), out("awgim_repacked", "test_embeddings.pkl"), 0)

    # .npy directory: mixed dtypes and orders; class names for train only.
    np.save(out("npy_dir", "train.npy", root=NPY_ROOT), expected["train"])
    np.save(out("npy_dir", "train_classes.npy", root=NPY_ROOT), expected["train_classes"])
    np.save(out("npy_dir", "val.npy", root=NPY_ROOT), expected["val"].astype(">f8"))
    np.save(out("npy_dir", "test.npy", root=NPY_ROOT), np.asfortranarray(expected["test"]))

    # .npz: compressed, float64, no class names.
    np.savez_compressed(
        out("npz", "float64_no_names.npz", root=NPY_ROOT),
        **{s: expected[s].astype(np.float64) for s in SPLITS},
    )
    np.savez(
        out("npz", "missing_test.npz", root=NPY_ROOT), train=expected["train"], val=expected["val"]
    )

    # Splits that disagree on the feature dimension.
    np.save(out("dim_mismatch", "train.npy", root=NPY_ROOT), expected["train"])
    np.save(out("dim_mismatch", "val.npy", root=NPY_ROOT), expected["val"][:, :, :8])
    np.save(out("dim_mismatch", "test.npy", root=NPY_ROOT), expected["test"])

    for root in (LEO_ROOT, NPY_ROOT):
        print("fixtures written under", os.path.normpath(root), file=sys.stderr)


def leo_layout(npy_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for number, split in enumerate(SPLITS):
        data = np.load(os.path.join(npy_dir, f"{split}.npy")).astype(np.float32)
        classes, examples, dim = data.shape
        keys, labels = [], []
        for c in range(classes):
            wnid = f"n9{number}{c:06d}"
            for e in range(examples):
                keys.append(f"{len(keys)}-{wnid}-{wnid}_{e:05d}.JPEG")
                labels.append(c)
        d = {
            "keys": np.array(keys, dtype=object),
            "labels": np.array(labels, dtype=np.int64),
            "embeddings": np.ascontiguousarray(data.reshape(classes * examples, dim)),
        }
        path = os.path.join(out_dir, f"{split}_embeddings.pkl")
        dump(with_bytes_keys(d), path, 2, Py2Pickler)
        print(f"{path}: {classes} classes x {examples} examples x {dim}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "leo-layout":
        leo_layout(sys.argv[2], sys.argv[3])
    else:
        main()
