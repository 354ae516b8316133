"""qp.gguf_export: any model file → GGUF v3 in a block type, read back with our reader and gguf-py."""

from __future__ import annotations

import hashlib
import os

import gguf
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import quantpress as qp
from quantpress import QuantpressError
from quantpress.cli import main


def make_model(path, seed=0):
    """Float32 and bfloat16 weights, a 1-D bias, odd row lengths, a 3-D and an integer tensor."""
    rng = np.random.default_rng(seed)
    tensors = {
        "blk.0.attn_q.weight": rng.standard_normal((8, 256)).astype(np.float32),
        "blk.0.attn_q.bias": rng.standard_normal(8).astype(np.float32),
        "blk.0.attn_v.weight": rng.standard_normal((4, 256)).astype(ml_dtypes.bfloat16),
        "blk.0.ffn_up.weight": rng.standard_normal((6, 512)).astype(ml_dtypes.bfloat16),
        "odd.weight": rng.standard_normal((4, 40)).astype(np.float32),  # not a multiple of 32
        "odd96.weight": rng.standard_normal((3, 96)).astype(np.float32),  # multiple of 32, not 256
        "conv.weight": rng.standard_normal((2, 3, 64)).astype(np.float32),
        "positions": np.arange(5, dtype=np.int64),
    }
    save_file(tensors, str(path))
    return tensors


# Expected destination types: (qtype, file_type, types)
CASES = [
    ("Q8_0", 7, {"blk.0.attn_q.weight": "Q8_0", "blk.0.attn_v.weight": "Q8_0", "blk.0.ffn_up.weight": "Q8_0",
                 "odd.weight": "F16", "odd96.weight": "Q8_0", "conv.weight": "Q8_0"}),
    ("Q4_K", 14, {"blk.0.attn_q.weight": "Q4_K", "blk.0.attn_v.weight": "Q4_K", "blk.0.ffn_up.weight": "Q4_K",
                  "odd.weight": "F16", "odd96.weight": "Q5_0", "conv.weight": "Q5_0"}),
    # one layer: use_more_bits(0, 1) holds, so llama.cpp gives attn_v Q6_K
    ("Q4_K_M", 15, {"blk.0.attn_q.weight": "Q4_K", "blk.0.attn_v.weight": "Q6_K", "blk.0.ffn_up.weight": "Q4_K",
                    "odd.weight": "F16", "odd96.weight": "Q5_0", "conv.weight": "Q5_0"}),
    ("F16", 1, {"blk.0.attn_q.weight": "F16", "blk.0.attn_v.weight": "F16", "blk.0.ffn_up.weight": "F16",
                "odd.weight": "F16", "odd96.weight": "F16", "conv.weight": "F16"}),
]


def expected_values(w32, dst):
    if dst in qp.GGUF_TYPES:
        return qp.gguf_dequantize(qp.gguf_quantize(w32, dst), dst, w32.shape)
    return w32.astype(np.float16 if dst == "F16" else np.float32).astype(np.float32)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("qtype,ftype,types", CASES, ids=[c[0] for c in CASES])
def test_export_reads_back_with_both_readers(tmp_path, qtype, ftype, types):
    src, dst = tmp_path / "tiny.safetensors", tmp_path / "tiny.gguf"
    tensors = make_model(src)
    before = sha(src)
    seen = []
    report = qp.gguf_export(src, dst, qtype, arch="llama", metadata={"x.s": "hi", "x.i": 7, "x.neg": -3, "x.f": 0.5, "x.b": True},
                            progress=lambda done, total, name: seen.append((done, total, name)))
    assert sha(src) == before and sorted(os.listdir(tmp_path)) == ["tiny.gguf", "tiny.safetensors"]
    want = {**types, "blk.0.attn_q.bias": "F32", "positions": "I64"}
    assert report.types() == want and report.file_type == ftype and report.qtype == qtype
    assert [s[0] for s in seen] == list(range(1, 9)) and {s[2] for s in seen} == set(tensors)

    f = qp.read_gguf(dst)
    assert list(f) == list(report.types())
    assert f.metadata["general.architecture"] == "llama" and f.metadata["general.name"] == "tiny"
    assert f.metadata["general.file_type"] == ftype and f.metadata["general.quantization_version"] == 2
    assert f.metadata["general.alignment"] == 32 and f.alignment == 32
    assert (f.metadata["x.s"], f.metadata["x.i"], f.metadata["x.neg"], f.metadata["x.f"], f.metadata["x.b"]) == ("hi", 7, -3, 0.5, True)
    g = gguf.GGUFReader(str(dst))
    g_tensors = {t.name: t for t in g.tensors}
    assert g.fields["general.architecture"].contents() == "llama" and g.fields["general.file_type"].contents() == ftype
    assert g.fields["x.i"].types == [gguf.GGUFValueType.UINT32] and g.fields["x.neg"].types == [gguf.GGUFValueType.INT32]
    assert g.fields["x.f"].types == [gguf.GGUFValueType.FLOAT32] and g.fields["x.b"].contents() is True
    for name, w in tensors.items():
        t, gt, dst_type = f[name], g_tensors[name], want[name]
        assert t.shape == w.shape and t.dtype == dst_type and gt.tensor_type.name == dst_type
        assert list(gt.shape) == list(reversed(w.shape))  # GGUF dims: ne0 = the last NumPy axis
        if dst_type == "I64":
            np.testing.assert_array_equal(t.numpy(), w)
            np.testing.assert_array_equal(np.asarray(gt.data), w)
            continue
        expect = expected_values(np.asarray(w, np.float32), dst_type)
        np.testing.assert_array_equal(t.numpy(), expect)
        decoded = gguf.quants.dequantize(np.asarray(gt.data), gt.tensor_type)
        np.testing.assert_array_equal(np.asarray(decoded, np.float32).reshape(w.shape), expect)


def test_fallback_flags_and_f32(tmp_path):
    src, dst = tmp_path / "m.safetensors", tmp_path / "m.gguf"
    tensors = make_model(src)
    report = qp.gguf_export(src, dst, "Q4_K")
    assert {t.name for t in report.tensors if t.fallback} == {"odd.weight", "odd96.weight", "conv.weight"}
    assert qp.read_gguf(dst).metadata["general.architecture"] == "quantpress"
    report = qp.gguf_export(src, dst, "f32")
    assert set(report.types().values()) == {"F32", "I64"} and report.file_type == 0
    f = qp.read_gguf(dst)
    for name, w in tensors.items():
        np.testing.assert_array_equal(f[name].numpy(), np.asarray(w, f[name].numpy().dtype))


def test_npz_input_and_cli(tmp_path):
    src, dst = tmp_path / "w.npz", tmp_path / "w.gguf"
    w = np.random.default_rng(3).standard_normal((4, 256)).astype(np.float16)
    np.savez(src, w=w)
    assert main(["gguf-export", str(src), "-o", str(dst), "--type", "Q4_K_M", "--arch", "llama", "--meta", "a.b=c"]) == 0
    f = qp.read_gguf(dst)
    assert f["w"].dtype == "Q4_K" and f.metadata["a.b"] == "c" and f.metadata["general.file_type"] == 15
    np.testing.assert_array_equal(f["w"].numpy(), expected_values(w.astype(np.float32), "Q4_K"))
    assert main(["gguf-export", str(src), "-o", str(tmp_path / "x.gguf"), "--type", "Q9_K"]) == 1
    assert main(["gguf-export", str(src), "-o", str(tmp_path / "x.gguf"), "--meta", "novalue"]) == 1
    assert not (tmp_path / "x.gguf").exists()


def test_failures_leave_no_output(tmp_path):
    src, dst = tmp_path / "m.safetensors", tmp_path / "m.gguf"
    good = make_model(src)
    with pytest.raises(QuantpressError, match="unknown qtype"):
        qp.gguf_export(src, dst, "Q3_K_XL")
    with pytest.raises(QuantpressError, match="must not be the input"):
        qp.gguf_export(src, src, "Q8_0")
    for key, value in (("general.alignment", 64), ("x.list", [1, 2]), ("x.big", 1 << 70)):
        with pytest.raises(QuantpressError, match="metadata"):
            qp.gguf_export(src, dst, "Q8_0", metadata={key: value})
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    qp.gguf_export(src, dst, "Q8_0")
    old = sha(dst)
    bad = dict(good)
    bad["odd96.weight"] = good["odd96.weight"].copy()
    bad["odd96.weight"][1, 5] = np.nan
    save_file(bad, str(tmp_path / "nan.safetensors"))
    big = {"w": np.full((2, 64), 1e6, np.float32)}  # outside float16's range
    save_file(big, str(tmp_path / "big.safetensors"))
    save_file({"w": np.ones((2, 32), np.uint8)}, str(tmp_path / "u8.safetensors"))
    for name, qtype in (("nan", "Q8_0"), ("nan", "F32"), ("big", "F16"), ("u8", "Q8_0")):
        with pytest.raises(QuantpressError):
            qp.gguf_export(tmp_path / f"{name}.safetensors", dst, qtype)
        assert sha(dst) == old  # the earlier output is untouched
    assert sorted(os.listdir(tmp_path)) == ["big.safetensors", "m.gguf", "m.safetensors", "nan.safetensors", "u8.safetensors"]
