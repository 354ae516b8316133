"""qp.compress reads every format qp.open_model reads: GGUF (incl. quantized tensors) and NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import quantpress as qp

from test_gguf_file import make_llama


def test_compress_a_gguf_file(tmp_path):
    src, dst = tmp_path / "m.gguf", tmp_path / "m.qp.safetensors"
    values = make_llama(src, n_layer=2)
    with qp.open_model(src) as model:
        assert model.format == "gguf" and set(model) == set(values)
        np.testing.assert_array_equal(model["blk.0.attn_q.weight"].numpy().astype(np.float32), values["blk.0.attn_q.weight"])
    report = qp.compress(src, dst, recipe="int8")
    assert report.output_bytes < report.input_bytes
    out = qp.load(dst)
    for name, v in values.items():
        got = np.asarray(out[name], dtype=np.float32)
        assert got.shape == v.shape
        assert np.linalg.norm(got - v) <= 0.02 * np.linalg.norm(v) + 1e-6, name  # int8 of Student-t rows


def test_compress_a_requantized_gguf_reads_its_k_quant_blocks(tmp_path):
    src, q4, dst = tmp_path / "m.gguf", tmp_path / "m.q4km.gguf", tmp_path / "m.qp.safetensors"
    values = make_llama(src, n_layer=2)
    qp.gguf_requantize(src, q4, "Q4_K_M")
    qp.compress(q4, dst, recipe="int8")
    out = qp.load(dst)
    w = values["blk.1.ffn_up.weight"]
    assert np.linalg.norm(out["blk.1.ffn_up.weight"] - w) <= 0.1 * np.linalg.norm(w)


def test_compress_an_npz_file(tmp_path, rng):
    src, dst = tmp_path / "m.npz", tmp_path / "m.qp.safetensors"
    w = (rng.standard_normal((256, 512)) * 0.02).astype(np.float32)
    np.savez(src, **{"layer.weight": w, "layer.bias": np.zeros(256, np.float32)})
    qp.compress(src, dst, recipe="int4")
    out = qp.load(dst)
    assert out.info("layer.weight")["method"] == "scalar" and out.info("layer.bias")["method"] == "none"
    assert np.linalg.norm(out["layer.weight"] - w) <= 0.15 * np.linalg.norm(w)


def test_compress_refuses_an_unknown_file(tmp_path):
    bad = tmp_path / "junk.bin"
    bad.write_bytes(b"\x00junk" * 100)
    with pytest.raises(qp.QuantpressError):
        qp.compress(bad, tmp_path / "out.safetensors", recipe="int8")
    assert not (tmp_path / "out.safetensors").exists()
