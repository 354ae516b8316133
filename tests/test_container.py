"""The compressed-model container, recipes, the compress pipeline and its CLI commands."""

from __future__ import annotations

import json
import os
import struct
import threading

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import quantpress as qp
from quantpress import cli, container, pipeline
from quantpress.container import GGUFTensor
from quantpress.recipe import get_recipe, recipe_from_dict, use_more_bits

from conftest import weight_like

SCALAR_CASES = [
    dict(bits=4, group_size=64),
    dict(bits=3, group_size=32, scheme="affine", method="hqq"),
    dict(bits=8, group_size=None, scheme="symmetric", scale_dtype="float32"),
    dict(bits=2, group_size=128, scheme="symmetric", method="mse"),
    dict(bits=5, group_size=8, axis=0, method="mse"),
    dict(bits=6, group_size=None, axis=None),
    dict(bits=4, group_size=64, scheme="nf4"),
    dict(bits=4, group_size=64, scheme="nf4", double_quant=True),
]


def _entries(rng: np.random.Generator) -> dict:
    w = weight_like(rng, (64, 256))
    ents = {f"s{i}.weight": qp.quantize(w, **kw) for i, kw in enumerate(SCALAR_CASES)}
    for t in ("Q8_0", "Q4_K", "Q6_K", "IQ4_XS"):
        ents[f"g_{t}.weight"] = GGUFTensor(qp.gguf_quantize(w, t), t, w.shape)
    ents["vq.weight"] = qp.vq_quantize(w, dim=4, bits_per_weight=2)
    ents["vq2.weight"] = qp.vq_quantize(w, dim=2, bits_per_weight=2, residual_stages=2, row_scale=False)
    ents["kept.bias"] = rng.standard_normal(64).astype(np.float32)
    ents["kept.bf16"] = rng.standard_normal((4, 8)).astype(ml_dtypes.bfloat16)
    ents["kept.ids"] = np.arange(10, dtype=np.int64)
    return ents


def _expected(e):
    return e if isinstance(e, np.ndarray) else e.dequantize()


@pytest.fixture
def saved(tmp_path, rng):
    ents = _entries(rng)
    path = tmp_path / "m.safetensors"
    qp.save_compressed(path, ents)
    return path, ents


def test_round_trip_every_method_is_exact(saved):
    path, ents = saved
    lazy, eager = qp.load(path), qp.load(path, lazy=False)
    assert isinstance(eager, dict) and set(lazy) == set(eager) == set(ents)
    for name, e in ents.items():
        want = _expected(e)
        for got in (lazy[name], eager[name]):
            assert got.dtype == want.dtype and got.shape == want.shape, name
            assert np.array_equal(got.view(np.uint8), np.ascontiguousarray(want).view(np.uint8)), name
    assert lazy.info("s0.weight")["bits_per_weight"] == ents["s0.weight"].bits_per_weight
    assert lazy.info("vq.weight")["nbytes"] == ents["vq.weight"].nbytes


def test_entries_rebuild_with_the_same_parameters(saved):
    path, ents = saved
    c = qp.load(path)
    for i in range(len(SCALAR_CASES)):
        a, b = c.entry(f"s{i}.weight").parts(), ents[f"s{i}.weight"].parts()
        for k in a:
            if isinstance(a[k], np.ndarray) or isinstance(b[k], np.ndarray):
                assert (a[k] is None) == (b[k] is None) and (a[k] is None or np.array_equal(a[k], b[k])), k
            else:
                assert a[k] == b[k], k


def test_file_opens_with_safetensors_and_has_the_documented_layout(saved):
    path, ents = saved
    with safe_open(str(path), framework="numpy") as f:
        keys, meta = set(f.keys()), f.metadata()
        assert np.array_equal(f.get_tensor("s0.weight.q"), ents["s0.weight"].codes)
        assert np.array_equal(f.get_tensor("g_Q4_K.weight.gguf"), ents["g_Q4_K.weight"].raw)
        assert np.array_equal(f.get_tensor("vq.weight.codebook"), ents["vq.weight"].codebooks)
        assert f.get_tensor("kept.ids").dtype == np.int64
    assert meta["quantpress.format_version"] == "1"
    records = json.loads(meta["quantpress.tensors"])
    assert records["s0.weight"] == {"method": "scalar", "shape": [64, 256], "dtype": "float32",
                                    "params": {"bits": 4, "group_size": 64, "axis": -1, "scheme": "affine", "algorithm": "rtn"}}
    assert records["g_Q4_K.weight"]["params"] == {"type": "Q4_K"}
    assert records["vq2.weight"]["params"] == {"dim": 2, "stages": 2, "row_scale": False}
    assert records["kept.bf16"] == {"method": "none", "params": {}, "shape": [4, 8], "dtype": "bfloat16"}
    assert {"s0.weight.q", "s0.weight.scale", "s0.weight.zero"} <= keys
    assert "s2.weight.zero" not in keys  # symmetric: no zero points
    assert {"s7.weight.scale_absmax", "s7.weight.scale_offset"} <= keys
    assert {"vq.weight.codes", "vq.weight.scale"} <= keys and "vq2.weight.scale" not in keys
    assert {"kept.bias", "kept.bf16", "kept.ids"} <= keys


def test_lazy_access_decodes_only_the_asked_tensor(saved, monkeypatch):
    path, _ = saved
    c = qp.load(path)
    calls = []
    real = qp.QuantizedTensor.dequantize
    monkeypatch.setattr(qp.QuantizedTensor, "dequantize", lambda self, *a: calls.append(self.bits) or real(self, *a))
    real_g = GGUFTensor.dequantize
    monkeypatch.setattr(GGUFTensor, "dequantize", lambda self: calls.append(self.qtype) or real_g(self))
    c["s1.weight"]
    assert calls == [3]
    c["g_Q6_K.weight"]
    assert calls == [3, "Q6_K"]


def test_concurrent_reads_give_identical_arrays(saved):
    path, ents = saved
    c = qp.load(path)
    names = sorted(ents)
    results: dict[int, dict] = {}
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait()
        results[t] = {n: c[n] for n in (names[t:] + names[:t]) * 3}

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 8
    for n in names:
        want = _expected(ents[n])
        assert all(np.array_equal(results[t][n].view(np.uint8), np.ascontiguousarray(want).view(np.uint8)) for t in range(8)), n


def test_kept_tensors_are_read_only(saved):
    path, _ = saved
    with pytest.raises(ValueError):
        qp.load(path)["kept.bias"][0] = 1


def test_failed_write_leaves_no_file(tmp_path, rng, monkeypatch):
    ents = _entries(rng)
    path = tmp_path / "out.safetensors"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(container.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        qp.save_compressed(path, ents)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    qp.save_compressed(path, {"a": np.ones((2, 2), np.float32)})
    before = path.read_bytes()
    with pytest.raises(qp.QuantpressError):  # fails while adding: the old file stays as it was
        qp.save_compressed(path, [("x", np.ones(3, np.float32)), ("x", np.ones(3, np.float32))])
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.safetensors"]


def test_save_leaves_its_input_unchanged(tmp_path, rng):
    ents = _entries(rng)
    copies = {n: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in e.parts().items()}
              for n, e in ents.items() if isinstance(e, qp.QuantizedTensor)}
    qp.save_compressed(tmp_path / "m.safetensors", ents)
    for n, parts in copies.items():
        for k, v in parts.items():
            now = ents[n].parts()[k]
            assert (np.array_equal(v, now) if isinstance(v, np.ndarray) else v == now), (n, k)


def test_name_collisions_are_refused(tmp_path):
    w = np.ones((4, 64), np.float32)
    with pytest.raises(qp.QuantpressError, match="already taken"):
        qp.save_compressed(tmp_path / "m.safetensors", {"a": qp.quantize(w), "a.q": w})
    assert os.listdir(tmp_path) == []


def _rewrite_meta(path, change):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    change(header)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + data[8 + n:])


@pytest.mark.parametrize("change, message", [
    (lambda h: h["__metadata__"].update({"quantpress.format_version": "2"}), "format version '2'"),
    (lambda h: h["__metadata__"].update({"quantpress.tensors": "{not json"}), "corrupt quantpress.tensors"),
    (lambda h: h["__metadata__"].update({"quantpress.tensors": json.dumps({"w": {"method": "magic", "params": {}, "shape": [4, 64], "dtype": "float32"}})}), "tensor 'w': unknown method 'magic'"),
    (lambda h: h["__metadata__"].update({"quantpress.tensors": json.dumps({"w": {"method": "scalar", "params": {"bits": 4, "group_size": 64, "axis": -1, "scheme": "affine", "algorithm": "rtn"}, "shape": [8, 64], "dtype": "float32"}})}), "tensor 'w'"),
    (lambda h: h["__metadata__"].update({"quantpress.tensors": json.dumps({"w": {"method": "gguf", "params": {"type": "Q4_K"}, "shape": [4, 64], "dtype": "float32"}})}), "belongs to no entry"),
    (lambda h: h["w.q"].update({"data_offsets": [0, 10**9]}), "data_offsets"),
    (lambda h: h["w.scale"].update({"shape": [4, 2]}), "do not hold shape"),
])
def test_corrupted_containers_are_refused_naming_file_and_tensor(tmp_path, change, message):
    path = tmp_path / "m.safetensors"
    qp.save_compressed(path, {"w": qp.quantize(np.ones((4, 64), np.float32), bits=4, group_size=64)})
    _rewrite_meta(path, change)
    with pytest.raises(qp.QuantpressError, match=message) as e:
        qp.load(path)
    assert str(path) in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        qp.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk").write_bytes(b"\xff" * 4)
    with pytest.raises(qp.QuantpressError, match="too short"):
        qp.load(tmp_path / "junk")
    (tmp_path / "big").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(qp.QuantpressError, match="header length"):
        qp.load(tmp_path / "big")
    (tmp_path / "notjson").write_bytes(struct.pack("<Q", 4) + b"abcd")
    with pytest.raises(qp.QuantpressError, match="not valid JSON"):
        qp.load(tmp_path / "notjson")


def test_vq_codes_beyond_the_codebook_are_refused(tmp_path, rng):
    vq = qp.vq_quantize(weight_like(rng, (64, 64)), dim=4, bits_per_weight=1)  # 16 codewords in uint8
    bad = qp.VQTensor(codes=np.full_like(vq.codes, 200), codebooks=vq.codebooks, scales=vq.scales, shape=vq.shape)
    qp.save_compressed(tmp_path / "m.safetensors", {"w": bad})
    with pytest.raises(qp.QuantpressError, match="exceeds the 16 codewords"):
        qp.load(tmp_path / "m.safetensors")


def test_plain_safetensors_loads_as_kept_tensors(tmp_path, rng):
    d = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(4, dtype=np.int32)}
    save_file(d, str(tmp_path / "p.safetensors"))
    c = qp.load(tmp_path / "p.safetensors")
    assert not c.is_container and set(c) == {"a", "b"}
    assert all(np.array_equal(c[k], d[k]) for k in d)


# --- recipes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("preset, name, shape, want", [
    ("int4", "model.layers.3.mlp.up_proj.weight", (1024, 512), "int4 g128 affine rtn"),
    ("int4", "model.embed_tokens.weight", (32000, 512), "int8 channel symmetric rtn"),
    ("int4", "lm_head.weight", (32000, 512), "int8 channel symmetric rtn"),
    ("int4", "x.weight", (64, 200), "int4 channel affine rtn"),  # 128 does not divide 200
    ("int4", "model.layers.0.input_layernorm.weight", (512,), "keep"),
    ("int4", "model.layers.0.q.bias", (512, 16), "keep"),
    ("int4", "small.weight", (32, 64), "keep"),  # 2048 < 4096 elements
    ("int8", "model.embed_tokens.weight", (32000, 512), "int8 channel symmetric rtn"),
    ("nf4", "a.weight", (256, 256), "nf4 g64"),
    ("q4_k", "blk.0.ffn_up.weight", (256, 512), "Q4_K"),
    ("q4_k", "output.weight", (32000, 512), "Q6_K"),
    ("q4_k", "blk.0.ffn_up.weight", (256, 96), "Q5_0"),  # llama.cpp's fallback
    ("q4_k", "blk.0.ffn_up.weight", (256, 100), "keep"),
    ("vq2", "a.weight", (256, 256), "vq d4 2b x1"),
    ("vq2", "a.weight", (256, 254), "int4 channel affine rtn"),
])
def test_presets_pick_the_documented_method(preset, name, shape, want):
    assert get_recipe(preset).plan(name, shape, "float32").describe() == want


def test_int_tensors_are_kept():
    assert get_recipe("int4").plan("pos_ids", (64, 128), "int64").method == "keep"


def test_q4_k_m_gives_q6_k_to_llama_cpp_layers():
    names = [(f"blk.{i}.{t}.weight", (256, 256), "float16") for i in range(16) for t in ("attn_v", "ffn_down", "attn_q")]
    plans = get_recipe("q4_k_m").plan_all(names)
    for i in range(16):
        want = "Q6_K" if use_more_bits(i, 16) else "Q4_K"
        assert plans[f"blk.{i}.attn_v.weight"].describe() == want
        assert plans[f"blk.{i}.ffn_down.weight"].describe() == want
        assert plans[f"blk.{i}.attn_q.weight"].describe() == "Q4_K"
    assert [i for i in range(16) if use_more_bits(i, 16)] == [0, 1, 4, 7, 10, 13, 14, 15]


def test_toml_rules_first_match_wins(tmp_path):
    (tmp_path / "r.toml").write_text("""
base = "int4"
min_elements = 0
skip = ["frozen"]
[[rules]]
pattern = "*.attn.*"
method = "gguf"
type = "Q8_0"
[[rules]]
regex = "mlp\\\\.(up|down)"
method = "scalar"
bits = 3
group_size = 32
algorithm = "hqq"
[[rules]]
pattern = "*"
method = "int8"
""")
    r = get_recipe(str(tmp_path / "r.toml"))
    assert r.name == "r"
    assert r.plan("h.0.attn.q.weight", (8, 64), "float32").describe() == "Q8_0"
    assert r.plan("h.0.mlp.up.weight", (8, 64), "float32").describe() == "int3 g32 affine hqq"
    assert r.plan("h.0.other.weight", (8, 64), "float32").describe() == "int8 channel symmetric rtn"
    assert r.plan("h.0.frozen.weight", (8, 64), "float32").method == "keep"


@pytest.mark.parametrize("spec, message", [
    ({"rules": [{"pattern": "*", "method": "zip"}]}, "unknown method 'zip'"),
    ({"rules": [{"pattern": "*", "method": "scalar", "colour": 1}]}, "no parameter 'colour'"),
    ({"rules": [{"method": "int8"}]}, "pattern"),
    ({"rules": [{"regex": "(", "method": "int8"}]}, "bad regular expression"),
    ({"base": "int3"}, "unknown base preset"),
    ({"rulez": []}, "unknown key 'rulez'"),
    ({"default": {"method": "gguf", "type": "Q9_K"}}, "unknown GGUF type"),
])
def test_bad_recipes(spec, message):
    with pytest.raises(qp.QuantpressError, match=message):
        recipe_from_dict(spec)


def test_unknown_recipe_name_and_missing_toml(tmp_path):
    with pytest.raises(qp.QuantpressError, match="unknown recipe 'int3'"):
        get_recipe("int3")
    with pytest.raises(FileNotFoundError):
        get_recipe(str(tmp_path / "none.toml"))


# --- pipeline and CLI ------------------------------------------------------------------------

@pytest.fixture
def model(tmp_path, rng):
    """A small MLP-like state dict: bfloat16 and float32 matrices, norms, biases, an embedding."""
    d = {
        "embed_tokens.weight": weight_like(rng, (512, 128)).astype(ml_dtypes.bfloat16),
        "layers.0.mlp.up_proj.weight": weight_like(rng, (256, 128)),
        "layers.0.mlp.up_proj.bias": np.zeros(256, np.float32),
        "layers.0.mlp.down_proj.weight": weight_like(rng, (128, 256)).astype(ml_dtypes.bfloat16),
        "layers.0.norm.weight": np.ones(128, np.float32),
        "lm_head.weight": weight_like(rng, (512, 128)),
    }
    path = tmp_path / "model.safetensors"
    save_file(d, str(path))
    return path, d


def test_compress_then_eval(model, tmp_path):
    src, d = model
    before = src.read_bytes()
    seen = []
    rep = qp.compress(src, tmp_path / "out.safetensors", "int4", progress=lambda *a: seen.append(a))
    assert src.read_bytes() == before
    assert [s[:2] for s in seen] == [(i + 1, len(d)) for i in range(len(d))]
    by = {t.name: t for t in rep.tensors}
    assert by["layers.0.mlp.up_proj.weight"].method == "int4 g128 affine rtn"
    assert by["layers.0.mlp.up_proj.weight"].bits_per_weight == 4.25
    assert by["embed_tokens.weight"].method == "int8 channel symmetric rtn"
    assert by["layers.0.norm.weight"].method == "keep" and by["layers.0.norm.weight"].rel_error == 0
    assert rep.input_bytes == sum(a.nbytes for a in d.values())
    assert rep.output_bytes == os.path.getsize(tmp_path / "out.safetensors")
    out = qp.load(tmp_path / "out.safetensors")
    assert out["embed_tokens.weight"].dtype == np.float32
    assert out.info("layers.0.mlp.down_proj.weight")["dtype"] == "bfloat16"
    assert out["layers.0.norm.weight"].dtype == np.float32 and np.array_equal(out["layers.0.norm.weight"], d["layers.0.norm.weight"])
    rows = {r["name"]: r for r in pipeline.evaluate(src, tmp_path / "out.safetensors")}
    for name, t in by.items():
        assert rows[name]["rel_error"] == pytest.approx(t.rel_error, rel=1e-9, abs=0)
        if t.method != "keep":
            assert 10 < rows[name]["sqnr_db"] < 50 and 0.98 < rows[name]["cosine"] < 1
    # the reported error is the error of what load() gives back
    x = d["layers.0.mlp.down_proj.weight"].astype(np.float32)
    y = out["layers.0.mlp.down_proj.weight"]
    assert by["layers.0.mlp.down_proj.weight"].rel_error == pytest.approx(np.linalg.norm(x - y) / np.linalg.norm(x), rel=1e-6)


@pytest.mark.parametrize("recipe", ["int8", "nf4", "q4_k", "q4_k_m", "vq2"])
def test_every_preset_compresses_and_loads(model, tmp_path, recipe):
    src, d = model
    rep = qp.compress(src, tmp_path / "o.safetensors", recipe)
    out = qp.load(tmp_path / "o.safetensors", lazy=False)
    assert set(out) == set(d)
    for t in rep.tensors:
        if t.method != "keep":
            assert 0 < t.rel_error < 0.5 and t.bits_per_weight < 9


def test_compress_errors(model, tmp_path):
    src, _ = model
    with pytest.raises(FileNotFoundError):
        qp.compress(tmp_path / "none.safetensors", tmp_path / "o.safetensors")
    with pytest.raises(qp.QuantpressError, match="unknown recipe"):
        qp.compress(src, tmp_path / "o.safetensors", "int3")
    with pytest.raises(qp.QuantpressError, match="replace the input"):
        qp.compress(src, src)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(qp.QuantpressError, match="junk.safetensors"):
        qp.compress(tmp_path / "junk.safetensors", tmp_path / "o.safetensors")
    nan = {"w": np.full((64, 128), np.nan, np.float32)}
    save_file(nan, str(tmp_path / "nan.safetensors"))
    with pytest.raises(qp.QuantpressError, match="tensor 'w'"):
        qp.compress(tmp_path / "nan.safetensors", tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_cli_compress_inspect_eval(model, tmp_path, capsys):
    src, d = model
    out = tmp_path / "c.safetensors"
    assert cli.main(["compress", str(src), "-o", str(out), "--recipe", "int4"]) == 0
    text = capsys.readouterr().out
    assert "layers.0.mlp.up_proj.weight" in text and "int4 g128 affine rtn" in text and "bits/weight" in text
    assert cli.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "quantpress container (format 1)" in text and "scalar" in text and "4.250" in text
    assert cli.main(["inspect", str(src)]) == 0
    assert "plain safetensors" in capsys.readouterr().out
    assert cli.main(["eval", str(src), str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["tensors"]
    assert {r["name"] for r in rows} == set(d) and all(r["cosine"] > 0.98 for r in rows)
    assert cli.main(["compress", str(src), "-o", str(out), "--recipe", "int3"]) == 1
    assert "unknown recipe" in capsys.readouterr().out
    assert cli.main(["inspect", str(tmp_path / "missing")]) == 1
    assert "no such file" in capsys.readouterr().out


def test_data_placed_by_another_writer_gives_the_same_file(tmp_path, rng):
    """What a Ray task does (write_parts_at into the temporary file, from another descriptor)
    then the shard's writer (place) gives the bytes ContainerWriter.add gives."""
    from quantpress.container import ContainerWriter, write_parts_at

    w = rng.standard_normal((64, 256)).astype(np.float32)
    entries = [("a", qp.quantize(w, bits=4, group_size=64), None), ("b", w[:3].copy(), None),
               ("c", qp.prune(w, 0.5, quantize={"bits": 8, "group_size": 64}), None)]
    with ContainerWriter(tmp_path / "added.safetensors", reserve=4096) as cw:
        for e in entries:
            cw.add(*e)
    with ContainerWriter(tmp_path / "placed.safetensors", reserve=4096) as cw:
        path, pos = cw.data_start
        fd = os.open(path, os.O_WRONLY)
        try:
            placed = []
            for name, entry, dtype in entries:
                record, parts, pos = write_parts_at(fd, pos, name, entry, dtype)
                placed.append((name, record, parts))
        finally:
            os.close(fd)
        for name, record, parts in placed:
            cw.place(name, record, parts)
        assert cw.data_start == (path, pos)
    assert (tmp_path / "placed.safetensors").read_bytes() == (tmp_path / "added.safetensors").read_bytes()
    with ContainerWriter(tmp_path / "dup.safetensors") as cw:
        cw.place("a", {}, [("a.q", "U8", [4], 4)])
        with pytest.raises(qp.QuantpressError, match="given twice"):
            cw.place("a", {}, [])
        with pytest.raises(qp.QuantpressError, match="already taken"):
            cw.place("b", {}, [("a.q", "U8", [4], 4)])
