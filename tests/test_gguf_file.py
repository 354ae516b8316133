"""GGUF files: the bounded reader, crafted-header refusals, and re-quantization into llama.cpp mixes.

Expected mix types are llama.cpp's ``llama_tensor_get_type`` (src/llama-quant.cpp) worked out by
hand for an 8-layer llama: ``use_more_bits`` picks layers {0, 3, 6, 7}.
"""

import hashlib
import os
import struct
import tempfile
import tracemalloc

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quantpress as qp
from quantpress import QuantpressError
from quantpress.formats.gguf_fmt import GGUFFile
from quantpress.formats.gguf_write import use_more_bits

D, FF, VOCAB, N_LAYER = 256, 512, 320, 8
MATS = {"attn_q": (D, D), "attn_k": (D, D), "attn_v": (D, D), "attn_output": (D, D),
        "ffn_up": (FF, D), "ffn_gate": (FF, D), "ffn_down": (D, FF)}
MORE_BITS = {0, 3, 6, 7}


def make_llama(path, dtype=np.float16, tied=False, n_layer=N_LAYER, ff=FF, seed=0):
    """A llama-shaped GGUF with varied metadata; returns {name: float32 values as written}."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(n_layer)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_file_type(1)
    w.add_name("tiny")
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(VOCAB)] + ["é", ""])
    w.add_array("tokenizer.ggml.scores", [float(i) / 3 for i in range(VOCAB)])
    w.add_key_value("test.nested", [["a", "b"], ["c"]], gguf.GGUFValueType.ARRAY)
    w.add_bool("test.flag", True)
    w.add_int64("test.i64", -(1 << 40))
    w.add_float64("test.f64", 0.1)
    w.add_uint16("test.u16", 65535)
    values = {}

    def add(name, shape, dt=dtype, scale=0.02):
        v = (rng.standard_t(5, size=shape) * scale).astype(dt)
        w.add_tensor(name, v)
        values[name] = v.astype(np.float32)

    add("token_embd.weight", (VOCAB, D))
    for i in range(n_layer):
        for m, shape in MATS.items():
            add(f"blk.{i}.{m}.weight", (D, ff) if m == "ffn_down" else (ff, D) if m.startswith("ffn") else shape)
        add(f"blk.{i}.attn_norm.weight", (D,), np.float32, 1.0)
        add(f"blk.{i}.ffn_norm.weight", (D,), dtype, 1.0)
    add("output_norm.weight", (D,), np.float32, 1.0)
    if not tied:
        add("output.weight", (VOCAB, D))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return values


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def expected_mix(name, qtype, tied):
    base = {"Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K"}[qtype]
    if name.endswith("norm.weight"):
        return "F32"
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return "Q6_K"
    if name.startswith("blk."):
        layer = int(name.split(".")[1])
        if (".attn_v." in name or ".ffn_down." in name) and layer in MORE_BITS:
            return "Q6_K"
    return base


def rel_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


def test_use_more_bits_matches_llama_cpp_formula():
    assert {i for i in range(8) if use_more_bits(i, 8)} == MORE_BITS
    assert [i for i in range(32) if use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_read_back_shapes_metadata_values(tmp_path):
    p = tmp_path / "m.gguf"
    values = make_llama(p, n_layer=2)
    f = qp.read_gguf(p)
    assert f.version == 3 and f.alignment == 32 and list(f) == list(values)
    for name, v in values.items():
        t = f[name]
        assert t.shape == v.shape
        assert t.dtype == ("F32" if name.endswith("attn_norm.weight") or name == "output_norm.weight" else "F16")
        np.testing.assert_array_equal(t.numpy().astype(np.float32), v)
        assert not t.raw().flags.writeable
    m = f.metadata
    assert m["general.architecture"] == "llama" and m["llama.block_count"] == 2 and m["general.name"] == "tiny"
    assert m["tokenizer.ggml.tokens"][-2:] == ["é", ""] and len(m["tokenizer.ggml.tokens"]) == VOCAB + 2
    assert m["tokenizer.ggml.scores"][3] == pytest.approx(1.0)
    assert m["test.nested"] == [["a", "b"], ["c"]]
    assert (m["test.flag"], m["test.i64"], m["test.f64"], m["test.u16"]) == (True, -(1 << 40), 0.1, 65535)
    ref = gguf.GGUFReader(str(p))
    assert set(m) == {k for k in ref.fields if not k.startswith("GGUF.")}


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "Q4_K_M", "Q5_K_M"])
@pytest.mark.parametrize("tied", [False, True])
def test_requantize(tmp_path, qtype, tied):
    src, dst = tmp_path / "f16.gguf", tmp_path / f"{qtype}.gguf"
    values = make_llama(src, tied=tied)
    before = sha(src)
    calls = []
    report = qp.gguf_requantize(src, dst, qtype, progress=lambda i, n, name: calls.append((i, n, name)))
    assert sha(src) == before
    assert [c[0] for c in calls] == list(range(1, len(values) + 1)) and calls[-1][1] == len(values)
    types = report.types()
    for name in values:
        want = expected_mix(name, qtype, tied) if qtype.endswith("_M") else ("F32" if "norm" in name else qtype)
        assert types[name] == want, name
    ftype = {"Q8_0": 7, "Q4_K": 14, "Q4_K_M": 15, "Q5_K_M": 17}[qtype]
    assert report.file_type == ftype and report.dst_bytes == os.path.getsize(dst) and report.n_fallback == 0
    _check_output(src, dst, values, types, ftype)


def _check_output(src, dst, values, types, ftype):
    f_in, f_out = qp.read_gguf(src), qp.read_gguf(dst)
    for k, v in f_in.fields.items():
        if k != "general.file_type":
            got = f_out.fields[k]
            assert got.type == v.type and got.item_type == v.item_type and got.to_python() == v.to_python(), k
    assert f_out.metadata["general.file_type"] == ftype and f_out.metadata["general.quantization_version"] == 2
    ref = gguf.GGUFReader(str(dst))
    assert int(ref.fields["general.file_type"].parts[-1][0]) == ftype
    ref_tensors = {t.name: t for t in ref.tensors}
    bound = {"F32": 0, "Q8_0": 0.01, "Q6_K": 0.03, "Q5_K": 0.05, "Q4_K": 0.1}
    for name, v in values.items():
        t, dst_type = f_out[name], types[name]
        assert t.dtype == dst_type and t.shape == v.shape and ref_tensors[name].tensor_type.name == dst_type
        got = t.numpy()
        if dst_type != "F32":
            # bytes equal quantizing the same float32 values directly, and decode as gguf does
            np.testing.assert_array_equal(t.raw(), qp.gguf_quantize(v, dst_type).reshape(-1))
            np.testing.assert_array_equal(got, gguf.quants.dequantize(np.asarray(ref_tensors[name].data), ref_tensors[name].tensor_type))
        assert rel_rms(got, v) <= bound[dst_type], (name, dst_type, rel_rms(got, v))


def test_requantize_from_q8_0_and_fallbacks(tmp_path):
    f16, q8, out = tmp_path / "f16.gguf", tmp_path / "q8.gguf", tmp_path / "q4.gguf"
    values = make_llama(f16, n_layer=2, ff=288)  # ffn_down rows of 288: not a multiple of 256
    qp.gguf_requantize(f16, q8, "Q8_0")
    report = qp.gguf_requantize(q8, out, "Q4_K_M")
    types = report.types()
    # n_layer 2: use_more_bits picks layer 1 only; llama.cpp's fallbacks: Q4_K -> Q5_0, Q6_K -> Q8_0.
    assert types["blk.0.ffn_down.weight"] == "Q5_0" and types["blk.1.ffn_down.weight"] == "Q8_0"
    assert types["blk.0.ffn_up.weight"] == "Q4_K" and types["output.weight"] == "Q6_K"
    assert report.n_fallback == 2
    f8, fo = qp.read_gguf(q8), qp.read_gguf(out)
    # Q8_0 -> Q8_0 copies the blocks; Q8_0 -> Q4_K quantizes the decoded Q8_0 values.
    np.testing.assert_array_equal(fo["blk.1.ffn_down.weight"].raw(), f8["blk.1.ffn_down.weight"].raw())
    up = f8["blk.1.ffn_up.weight"].numpy()
    np.testing.assert_array_equal(fo["blk.1.ffn_up.weight"].raw(), qp.gguf_quantize(up, "Q4_K").reshape(-1))
    assert rel_rms(fo["blk.1.ffn_up.weight"].numpy(), values["blk.1.ffn_up.weight"]) < 0.1
    report = qp.gguf_requantize(f16, out, "Q4_K")
    assert report.types()["blk.0.ffn_down.weight"] == "Q5_0"


def test_row_length_not_multiple_of_32_falls_back_to_f16(tmp_path):
    src, dst = tmp_path / "odd.gguf", tmp_path / "q.gguf"
    w = gguf.GGUFWriter(str(src), "llama")
    w.add_block_count(1)
    v = np.random.default_rng(1).standard_normal((8, 40)).astype(np.float32)
    w.add_tensor("blk.0.attn_q.weight", v)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    for qtype in ("Q4_K_M", "Q8_0"):
        report = qp.gguf_requantize(src, dst, qtype)
        assert report.types() == {"blk.0.attn_q.weight": "F16"} and report.n_fallback == 1
        np.testing.assert_array_equal(qp.read_gguf(dst)["blk.0.attn_q.weight"].numpy(), v.astype(np.float16))


def test_failed_requantize_leaves_no_file(tmp_path):
    src = tmp_path / "nan.gguf"
    w = gguf.GGUFWriter(str(src), "llama")
    w.add_block_count(1)
    bad = np.ones((4, 256), np.float32)
    bad[2, 7] = np.nan
    w.add_tensor("blk.0.attn_q.weight", bad)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(QuantpressError):
        qp.gguf_requantize(src, tmp_path / "out.gguf", "Q4_K")
    assert sorted(os.listdir(tmp_path)) == ["nan.gguf"]
    good = tmp_path / "good.gguf"
    make_llama(good, n_layer=1)
    with pytest.raises(QuantpressError, match="must not be the input"):
        qp.gguf_requantize(good, good, "Q8_0")
    with pytest.raises(QuantpressError, match="unknown qtype"):
        qp.gguf_requantize(good, tmp_path / "x.gguf", "Q3_K_XL")
    assert sorted(os.listdir(tmp_path)) == ["good.gguf", "nan.gguf"]


# --- crafted headers ---------------------------------------------------------------------

def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def kv_u32(key, v):
    return s(key) + struct.pack("<II", 4, v)


def tinfo(name, dims, type_id=0, offset=0):
    return s(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, type_id, offset)


def craft(kvs=(), tensors=(), data=b"", version=3, n_kv=None, n_tensors=None, magic=b"GGUF"):
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(tensors)
    return head + bytes(-len(head) % 32) + data


GOOD = craft([kv_u32("llama.block_count", 1)], [tinfo("a", (8,)), tinfo("b", (8,), offset=32)], bytes(64))

BAD = {
    "wrong magic": (craft(magic=b"GGUX"), "magic"),
    "version 1": (craft(version=1), "version"),
    "version 4": (craft(version=4), "version"),
    "big endian": (craft(version=3 << 24), "version"),
    "string past EOF": (craft([struct.pack("<Q", 1000) + b"key"]), "length"),
    "array length 2^63": (craft([s("k") + struct.pack("<IIQ", 9, 0, 1 << 63)]), "array length"),
    "string array 2^63": (craft([s("k") + struct.pack("<IIQ", 9, 8, (1 << 63) + 5)]), "array length"),
    "nested arrays 2^40": (craft([s("k") + struct.pack("<IIQ", 9, 9, 1 << 40)]), "array length"),
    "deep nesting": (craft([s("k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 64 + bytes(64)]), "nested"),
    "tensor count 10^9": (craft(n_tensors=10**9), "tensor_count"),
    "kv count 2^64-1": (craft(n_kv=(1 << 64) - 1), "metadata_kv_count"),
    "unknown value type": (craft([s("k") + struct.pack("<I", 13)]), "type"),
    "bool 2": (craft([s("k") + struct.pack("<IB", 7, 2)]), "bool"),
    "duplicate key": (craft([kv_u32("k", 1), kv_u32("k", 2)]), "duplicate key"),
    "n_dims 9": (craft(tensors=[tinfo("a", (1,) * 9)]), "n_dims"),
    "n_dims 0": (craft(tensors=[tinfo("a", ())]), "n_dims"),
    "dims overflow": (craft(tensors=[tinfo("a", (1 << 32, 1 << 32, 1 << 32))]), "dims"),
    "huge tensor": (craft(tensors=[tinfo("a", (1 << 40,))]), "offset"),
    "offset past EOF": (craft(tensors=[tinfo("a", (8,), offset=1 << 62)], data=bytes(32)), "offset"),
    "misaligned offset": (craft(tensors=[tinfo("a", (4,), offset=8)], data=bytes(64)), "offset"),
    "overlap": (craft(tensors=[tinfo("a", (16,)), tinfo("b", (8,), offset=32)], data=bytes(96)), "overlaps"),
    "duplicate name": (craft(tensors=[tinfo("a", (8,)), tinfo("a", (8,), offset=32)], data=bytes(64)), "duplicate tensor"),
    "unknown type": (craft(tensors=[tinfo("a", (32,), type_id=99)], data=bytes(128)), "unknown ggml type id 99"),
    "ragged blocks": (craft(tensors=[tinfo("a", (33,), type_id=8)], data=bytes(128)), "block size"),
    "alignment 3": (craft([kv_u32("general.alignment", 3)]), "general.alignment"),
    "alignment 0": (craft([kv_u32("general.alignment", 0)]), "general.alignment"),
    "alignment u8": (craft([s("general.alignment") + struct.pack("<IB", 0, 32)]), "general.alignment"),
    "empty": (b"", "header"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_crafted_header_is_refused_without_big_allocations(tmp_path, case):
    data, field = BAD[case]
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(QuantpressError, match=field) as e:
            qp.read_gguf(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(p) in str(e.value)
    assert peak < 1 << 20, peak


def test_crafted_good_file_and_truncations(tmp_path):
    p = tmp_path / "good.gguf"
    p.write_bytes(GOOD)
    f = qp.read_gguf(p)
    assert list(f) == ["a", "b"] and f["b"].offset == f.data_offset + 32
    for n in range(len(GOOD)):
        p.write_bytes(GOOD[:n])
        with pytest.raises(QuantpressError):
            qp.read_gguf(p)


@pytest.fixture(scope="module")
def small_file():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "s.gguf")
        w = gguf.GGUFWriter(p, "llama")
        w.add_block_count(1)
        w.add_array("tokenizer.ggml.tokens", ["a", "bc", "d"])
        w.add_array("s", [1, 2, 3])
        w.add_key_value("n", [["x"], ["y", "z"]], gguf.GGUFValueType.ARRAY)
        rng = np.random.default_rng(0)
        w.add_tensor("f", rng.standard_normal(8).astype(np.float16))
        w.add_tensor("q", qp.gguf_quantize(rng.standard_normal((2, 256)).astype(np.float32), "Q4_K"),
                     raw_dtype=gguf.GGMLQuantizationType.Q4_K)
        w.add_tensor("g", rng.standard_normal((2, 32)).astype(np.float32))
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        yield open(p, "rb").read()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutations_load_or_refuse(small_file, data):
    buf = bytearray(small_file)
    header_end = min(len(buf), 400)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, header_end - 1))
        buf[pos] = data.draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, data.draw(st.integers(0, 255))]))
    if data.draw(st.booleans()):
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    with tempfile.NamedTemporaryFile(suffix=".gguf", delete=False) as t:
        t.write(bytes(buf))
    try:
        try:
            f = GGUFFile(t.name)
        except QuantpressError:
            return
        for tensor in f.values():
            try:
                tensor.numpy()
            except QuantpressError:
                pass
    finally:
        os.unlink(t.name)
