"""ONNX reader (initializers, Constant tensors, external data, hostile files) and the weight-only
ONNX writer (DequantizeLinear / MatMulNBits): checker, onnxruntime, exact decoded values."""

from __future__ import annotations

import hashlib
import os

import ml_dtypes
import numpy as np
import pytest
from hypothesis import example, HealthCheck, given, settings
from hypothesis import strategies as st

import quantpress as qp
from quantpress import QuantpressError

onnx = pytest.importorskip("onnx")  # a test extra; never skipped in CI (installed there)
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

K, H, N = 256, 384, 128


def _mlp(rng: np.random.Generator, opset: int = 21) -> onnx.ModelProto:
    """x[4,K] -> MatMul w1[K,H] + b1 -> Relu -> Gemm(w2[N,H], transB=1) + b2 -> y[4,N]."""
    w1 = rng.standard_normal((K, H)).astype(np.float32)
    w2 = rng.standard_normal((N, H)).astype(np.float32) * 0.1
    b1, b2 = rng.standard_normal(H).astype(np.float32), rng.standard_normal(N).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"), helper.make_node("Add", ["h", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="gemm", transB=1)]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, N])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _save(model: onnx.ModelProto, path: str, **kw: object) -> str:
    onnx.save_model(model, path, **kw)
    return path


def _run(path: str, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x"] and [o.name for o in sess.get_outputs()] == ["y"]
    return sess.run(None, {"x": x})[0]


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --- reader ---

def _mixed_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    want = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((4,)).astype(np.float16),
        "i64": np.array([[1, -2], [3, 2**40]], np.int64),
        "bf16": rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16),
        "u8": np.arange(7, dtype=np.uint8),
        "typed_f32": np.array([1.5, -2.0, 3.25], np.float32),
        "typed_i64": np.array([[7], [-9]], np.int64),
        "const_w": rng.standard_normal((2, 2)).astype(np.float32),
    }
    inits = [numpy_helper.from_array(want[n], n) for n in ("f32", "f16", "i64", "bf16", "u8")]
    inits.append(helper.make_tensor("typed_f32", TensorProto.FLOAT, [3], want["typed_f32"].tolist()))
    inits.append(helper.make_tensor("typed_i64", TensorProto.INT64, [2, 1], want["typed_i64"].reshape(-1).tolist()))
    inits.append(helper.make_tensor("names", TensorProto.STRING, [1], [b"hello"]))
    const = helper.make_node("Constant", [], ["const_w"], value=numpy_helper.from_array(want["const_w"]))
    graph = helper.make_graph([const, helper.make_node("Identity", ["const_w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), want


def test_reader_round_trip(tmp_path):
    model, want = _mixed_model()
    path = _save(model, str(tmp_path / "m.onnx"))
    with qp.open_model(path) as m:
        assert m.format == "onnx" and list(m) == [n for n in want if n != "const_w"] + ["const_w"]
        assert m.metadata["onnx.skipped"] == "names" and m.metadata["onnx.opset"] == "ai.onnx:17"
        dtypes = {n: m[n].dtype for n in m}
        assert dtypes == {"f32": "F32", "f16": "F16", "i64": "I64", "bf16": "BF16", "u8": "U8",
                          "typed_f32": "F32", "typed_i64": "I64", "const_w": "F32"}
        for name, arr in want.items():
            got = m[name].numpy()
            assert got.shape == arr.shape == m[name].shape and got.dtype == arr.dtype
            assert got.tobytes() == arr.tobytes(), name
            assert not got.flags.writeable


def test_reader_int4_tensors(tmp_path):
    vals = np.array([[-8, 7, 0], [3, -1, 5]], np.int8)
    u = np.array([15, 0, 9], np.uint8)
    inits = [helper.make_tensor("i4", TensorProto.INT4, [2, 3], vals.reshape(-1).tolist()),
             helper.make_tensor("u4", TensorProto.UINT4, [3], u.tolist())]
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits)
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(tmp_path / "m.onnx"))
    with qp.open_model(path) as m:
        assert (m["i4"].dtype, m["u4"].dtype) == ("I4", "U4")
        assert m["i4"].numpy().astype(np.int8).tolist() == vals.tolist()
        assert m["u4"].numpy().astype(np.uint8).tolist() == u.tolist()


def test_reader_external_data_is_mapped(tmp_path):
    model, want = _mixed_model()
    path = _save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                 location="m.data", size_threshold=0)
    assert os.path.getsize(tmp_path / "m.data") > 0
    with qp.open_model(path) as m:
        arr = m["f32"].numpy()
        assert arr.tobytes() == want["f32"].tobytes()
        assert isinstance(arr.base, np.memmap) or isinstance(arr, np.memmap)
        for name, a in want.items():
            assert m[name].numpy().tobytes() == a.tobytes()


def _with_external(tmp_path, location: str, offset: int, length: int, dims=(4,)) -> str:
    (tmp_path / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=list(dims))
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [t])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "m.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def test_external_data_checks(tmp_path):
    with qp.open_model(_with_external(tmp_path, "w.bin", 0, 16)) as m:
        assert m["w"].numpy().tolist() == [0.0, 1.0, 2.0, 3.0]
    (tmp_path.parent / "outside.bin").write_bytes(b"\0" * 16)
    cases = {
        "../outside.bin": ("w.bin", "location"), str(tmp_path / "w.bin"): ("", "location"),
        "missing.bin": ("", "does not exist"),
    }
    for loc, (_, word) in cases.items():
        with pytest.raises(QuantpressError, match=f"m.onnx.*initializer 0 .*{word}"):
            qp.open_model(_with_external(tmp_path, loc, 0, 16))
    os.symlink(tmp_path.parent / "outside.bin", tmp_path / "link.bin")
    with pytest.raises(QuantpressError, match="leads outside"):
        qp.open_model(_with_external(tmp_path, "link.bin", 0, 16))
    with pytest.raises(QuantpressError, match="external_data offset.*outside"):
        qp.open_model(_with_external(tmp_path, "w.bin", 8, 16))
    with pytest.raises(QuantpressError, match="external_data length: 16 bytes"):
        qp.open_model(_with_external(tmp_path, "w.bin", 0, 16, dims=(3,)))
    with pytest.raises(QuantpressError, match="dims: shape \\[4\\] has more elements"):
        qp.open_model(_with_external(tmp_path, "w.bin", 0, 12))
    with pytest.raises(QuantpressError, match="dims"):
        qp.open_model(_with_external(tmp_path, "w.bin", 0, 16, dims=(2**40, 2**40)))


def test_bad_files(tmp_path):
    good = _save(_mixed_model()[0], str(tmp_path / "good.onnx"))
    data = open(good, "rb").read()
    cases = {"truncated": data[: len(data) // 2], "junk": b"\x08" + bytes(range(200, 256)) * 3,
             "magic": b"hello world", "empty-graph": helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString()[:2]}
    for name, blob in cases.items():
        p = tmp_path / f"{name}.onnx"
        p.write_bytes(blob)
        with pytest.raises(QuantpressError, match=f"{name}.onnx"):
            with qp.open_model(str(p)) as m:
                [m[n].numpy() for n in m]
    # raw_data shorter than the shape says
    t = numpy_helper.from_array(np.zeros((4, 4), np.float32), "w")
    t.raw_data = t.raw_data[:-4]
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [t])
    p = _save(helper.make_model(graph), str(tmp_path / "short.onnx"))
    with pytest.raises(QuantpressError, match="short.onnx: initializer 0 .*dims: shape \\[4, 4\\] has more elements"):
        qp.open_model(p)
    # a protobuf larger than 2 GB is refused before anything is read (a sparse file)
    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:
        f.write(b"\x08\x07")
        f.truncate(2**31 + 10)
    with pytest.raises(QuantpressError, match="big.onnx: protobuf size"):
        qp.open_model(str(big))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 10**6))
@example(edits=[(3096, 128)], cut=0)  # a name that is not valid UTF-8 (protobuf hands back bytes)
def test_fuzz_reader(tmp_path, edits, cut):
    model, _ = _mixed_model()
    data = bytearray(model.SerializeToString())
    for pos, byte in edits:
        data[pos % len(data)] = byte
    data = data[: max(1, len(data) - cut % 40)]
    p = tmp_path / "fuzz.onnx"
    p.write_bytes(bytes(data))
    try:
        with qp.open_model(str(p)) as m:
            for n in m:
                a = m[n].numpy()
                assert a.shape == m[n].shape
    except QuantpressError as e:
        assert "fuzz.onnx" in str(e)


# --- writer ---

def _decode_dq(q: onnx.ModelProto, name: str) -> np.ndarray:
    """Decodes the DequantizeLinear feeding ``name`` by hand: (code - zero) * scale, float32."""
    node = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == name)
    inits = {t.name: t for t in q.graph.initializer}
    codes_t, scale = inits[node.input[0]], numpy_helper.to_array(inits[node.input[1]])
    shape = tuple(codes_t.dims)
    raw = np.frombuffer(codes_t.raw_data, np.uint8)
    if codes_t.data_type in (TensorProto.INT4, TensorProto.UINT4):
        raw = np.stack([raw & 15, raw >> 4], -1).reshape(-1)[: np.prod(shape)]
    signed = codes_t.data_type in (TensorProto.INT4, TensorProto.INT8)
    half = 8 if codes_t.data_type == TensorProto.INT4 else 128
    codes = (((raw.astype(np.int32) ^ half) - half) if signed else raw.astype(np.int32)).reshape(shape)
    zero = np.zeros_like(scale, np.int32)
    if len(node.input) > 2:
        z = np.frombuffer(inits[node.input[2]].raw_data, np.uint8)
        if inits[node.input[2]].data_type == TensorProto.UINT4:
            z = np.stack([z & 15, z >> 4], -1).reshape(-1)[: scale.size]
        zero = z.astype(np.int32).reshape(scale.shape)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if "block_size" in attrs:
        ax, bs = attrs["axis"], attrs["block_size"]
        scale, zero = np.repeat(scale, bs, axis=ax), np.repeat(zero, bs, axis=ax)
    elif scale.ndim == 1:
        bshape = [1, 1]
        bshape[attrs["axis"]] = -1
        scale, zero = scale.reshape(bshape), zero.reshape(bshape)
    return (codes - zero).astype(np.float32) * scale.astype(np.float32)


def _decode_nbits(q: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    """Decodes a MatMulNBits weight by hand into [K, N] float32."""
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k, n, bits, bs = attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]
    b, scales = inits[node.input[1]], inits[node.input[2]]
    kb = -(-k // bs)
    assert b.shape == (n, kb, bs * bits // 8) and scales.shape == (n, kb)
    codes = b.reshape(n, -1).astype(np.int32)
    if bits == 4:
        codes = np.stack([codes & 15, codes >> 4], -1).reshape(n, -1)
    zero = np.full((n, kb), 1 << (bits - 1), np.int32)
    if len(node.input) > 3:
        z = inits[node.input[3]].astype(np.int32)
        zero = (np.stack([z & 15, z >> 4], -1).reshape(n, -1) if bits == 4 else z)[:, :kb]
    w = (codes - np.repeat(zero, bs, axis=1)).astype(np.float32) * np.repeat(scales, bs, axis=1)
    return w[:, :k].T


def _ours(w: np.ndarray, kaxis: int, bits: int, group, scheme: str) -> np.ndarray:
    """quantpress's own dequantized weight, in the weight's layout."""
    wk = w.T if kaxis == 0 else w
    pad = 0 if group is None else -wk.shape[1] % group
    wk = np.concatenate([wk, np.zeros((wk.shape[0], pad), np.float32)], 1)
    back = qp.quantize(np.ascontiguousarray(wk), bits, group, scheme, axis=-1, scale_dtype="float32").dequantize()
    back = back[:, : w.shape[kaxis]]
    return back.T if kaxis == 0 else back


CONFIGS = [(8, "dequantize_linear", None, "symmetric", 0.01), (8, "dequantize_linear", 64, "affine", 0.01),
           (4, "dequantize_linear", 128, "affine", 0.11), (4, "dequantize_linear", "channel", "symmetric", 0.25),
           (4, "matmul_nbits", 32, "affine", 0.09), (4, "matmul_nbits", 128, "symmetric", 0.13),
           (8, "matmul_nbits", 128, "symmetric", 0.01)]


@pytest.mark.parametrize("bits,op,group,scheme,bound", CONFIGS)
def test_writer_runs_and_matches_quantpress(tmp_path, bits, op, group, scheme, bound):
    rng = np.random.default_rng(bits)
    model = _mlp(rng)
    src = _save(model, str(tmp_path / "f.onnx"))
    before = _sha(src)
    dst = str(tmp_path / "q.onnx")
    calls = []
    r = qp.onnx_quantize(src, dst, bits=bits, op=op, group_size=group, scheme=scheme,
                         progress=lambda d, t, n: calls.append((d, t, n)))
    assert _sha(src) == before and calls == [(1, 2, "w1"), (2, 2, "w2")]
    assert [t.name for t in r.tensors] == ["w1", "w2"] and r.skipped == ()
    onnx.checker.check_model(dst, full_check=True)
    q = onnx.load(dst)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    g = None if group == "channel" else group
    if op == "dequantize_linear":
        decoded = {"w1": _decode_dq(q, "w1"), "w2": _decode_dq(q, "w2")}
    else:
        nodes = [n for n in q.graph.node if n.op_type == "MatMulNBits"]
        assert [n.domain for n in nodes] == ["com.microsoft"] * 2
        decoded = {"w1": _decode_nbits(q, nodes[0]), "w2": _decode_nbits(q, nodes[1]).T}
    for name, kaxis in (("w1", 0), ("w2", 1)):
        exp = _ours(w[name], kaxis, bits, g, scheme)
        assert decoded[name].tobytes() == exp.tobytes(), name  # bit-identical to quantpress
        rel = np.linalg.norm(exp - w[name]) / np.linalg.norm(w[name])
        assert rel < bound and abs(rel - r.tensors[0 if name == "w1" else 1].rel_error) < 1e-6
    x = rng.standard_normal((4, K)).astype(np.float32)
    y_ref, y_q = _run(src, x), _run(dst, x)
    # onnxruntime computes with exactly these weights (up to float summation order)
    h = np.maximum(x @ decoded["w1"] + w["b1"], 0)
    y_hand = h @ decoded["w2"].T + w["b2"]
    assert np.abs(y_q - y_hand).max() <= 1e-3 * np.abs(y_hand).max()
    assert np.linalg.norm(y_q - y_ref) / np.linalg.norm(y_ref) < 2 * bound
    assert os.path.getsize(dst) < os.path.getsize(src) * (0.3 if bits == 8 else 0.2)
    assert r.output_bytes == os.path.getsize(dst) and r.input_bytes == os.path.getsize(src)


def test_writer_external_data(tmp_path):
    rng = np.random.default_rng(5)
    model = _mlp(rng, opset=17)
    b1 = numpy_helper.to_array(model.graph.initializer[1])
    src = _save(model, str(tmp_path / "f.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                location="f.data", size_threshold=0)
    hashes = (_sha(src), _sha(str(tmp_path / "f.data")))
    out = tmp_path / "out"
    out.mkdir()
    dst = str(out / "q.onnx")
    r = qp.onnx_quantize(src, dst, bits=4, op="matmul_nbits", group_size=64)
    assert (_sha(src), _sha(str(tmp_path / "f.data"))) == hashes
    assert sorted(os.listdir(out)) == ["q.onnx", "q.onnx.data"]  # b1 (1.5 KB) went to external data
    assert r.output_bytes == os.path.getsize(dst) + os.path.getsize(out / "q.onnx.data")
    onnx.checker.check_model(dst, full_check=True)
    x = rng.standard_normal((4, K)).astype(np.float32)
    y_ref, y_q = _run(src, x), _run(dst, x)
    assert np.linalg.norm(y_q - y_ref) / np.linalg.norm(y_ref) < 0.2
    with qp.open_model(dst) as m:
        assert m["b1"].numpy().tobytes() == b1.tobytes()


def test_writer_refusals_leave_nothing(tmp_path):
    rng = np.random.default_rng(6)
    model = _mlp(rng, opset=17)
    src = _save(model, str(tmp_path / "f.onnx"))
    dst = str(tmp_path / "q.onnx")
    with pytest.raises(QuantpressError, match="opset >= 21"):
        qp.onnx_quantize(src, dst, bits=4)
    with pytest.raises(QuantpressError, match="overwrite the input"):
        qp.onnx_quantize(src, src)
    with pytest.raises(QuantpressError, match="power of two"):
        qp.onnx_quantize(src, dst, bits=4, op="matmul_nbits", group_size=48)
    with pytest.raises(QuantpressError, match="op must be"):
        qp.onnx_quantize(src, dst, op="qdq")
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    w1 = numpy_helper.to_array(bad.graph.initializer[0]).copy()
    w1[3, 7] = np.nan
    bad.graph.initializer[0].CopyFrom(numpy_helper.from_array(w1, "w1"))
    nan_src = _save(bad, str(tmp_path / "nan.onnx"))
    with pytest.raises(QuantpressError, match="nan.onnx: initializer 'w1': holds NaN"):
        qp.onnx_quantize(nan_src, dst)
    assert sorted(os.listdir(tmp_path)) == ["f.onnx", "nan.onnx"]


def test_writer_skips_what_it_cannot_quantize(tmp_path):
    rng = np.random.default_rng(7)
    model = _mlp(rng)
    gemm = model.graph.node[3]
    gemm.attribute.append(helper.make_attribute("alpha", 0.5))
    src = _save(model, str(tmp_path / "f.onnx"))
    r = qp.onnx_quantize(src, str(tmp_path / "q.onnx"), bits=4, op="matmul_nbits", min_elements=0)
    assert [t.name for t in r.tensors] == ["w1"]
    assert dict(r.skipped) == {"w2": "Gemm with transA, alpha or beta has no MatMulNBits form"}
    r = qp.onnx_quantize(src, str(tmp_path / "q8.onnx"), bits=8)  # DequantizeLinear serves any Gemm
    assert [t.name for t in r.tensors] == ["w1", "w2"]
    r = qp.onnx_quantize(src, str(tmp_path / "big.onnx"), bits=8, min_elements=K * H)
    assert [t.name for t in r.tensors] == ["w1"] and r.skipped == (("w2", f"{N * H} elements < min_elements"),)
    x = rng.standard_normal((4, K)).astype(np.float32)
    for out in ("q.onnx", "q8.onnx", "big.onnx"):
        y = _run(str(tmp_path / out), x)
        assert np.linalg.norm(y - _run(src, x)) / np.linalg.norm(y) < 0.2


def test_cli_onnx_quantize(tmp_path):
    from quantpress.cli import main

    src = _save(_mlp(np.random.default_rng(8)), str(tmp_path / "f.onnx"))
    assert main(["onnx-quantize", src, "-o", str(tmp_path / "q.onnx"), "--bits", "4", "--op", "matmul_nbits"]) == 0
    onnx.checker.check_model(str(tmp_path / "q.onnx"), full_check=True)


def _ort_nbits_model(model: onnx.ModelProto, bits: int, block: int) -> onnx.ModelProto:
    """The model with each MatMul weight packed by onnxruntime's own kernel (what its
    MatMulNBitsQuantizer calls; its Python wrapper needs onnx_ir, not installed here), asymmetric."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type != "MatMul":
            continue
        w = inits[node.input[1]]
        k, n = w.shape
        kb = -(-k // block)
        packed = np.zeros((n, kb, block * bits // 8), np.uint8)
        zp = np.zeros((n, -(-kb * bits // 8)), np.uint8)
        scales = np.zeros((n, kb), np.float32)
        (quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits)(packed, w, scales, zp, block, n, k, False)
        names = [f"{node.input[1]}_{s}" for s in ("q", "s", "z")]
        g.initializer.extend(numpy_helper.from_array(a, nm) for a, nm in zip((packed, scales, zp), names))
        node.CopyFrom(helper.make_node("MatMulNBits", [node.input[0]] + names, list(node.output), domain="com.microsoft",
                                       K=k, N=n, bits=bits, block_size=block))
    kept = [t for t in g.initializer if t.name not in {"w1", "w2t"}]
    del g.initializer[:]
    g.initializer.extend(kept)
    out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out


@pytest.mark.parametrize("bits,block", [(4, 32), (4, 128), (8, 128)])
def test_no_worse_than_onnxruntime_quantizer(tmp_path, bits, block):
    rng = np.random.default_rng(9)
    model = _mlp(rng)
    model.graph.node[3].CopyFrom(helper.make_node("MatMul", ["r", "w2t"], ["y0"]))
    model.graph.node.append(helper.make_node("Add", ["y0", "b2"], ["y"]))
    w2 = numpy_helper.to_array(model.graph.initializer[2])
    model.graph.initializer[2].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w2.T), "w2t"))
    src = _save(model, str(tmp_path / "f.onnx"))
    _save(_ort_nbits_model(model, bits, block), str(tmp_path / "ort.onnx"))
    qp.onnx_quantize(src, str(tmp_path / "q.onnx"), bits=bits, op="matmul_nbits", group_size=block, scheme="affine")
    err = {}
    for _ in range(16):
        x = rng.standard_normal((4, K)).astype(np.float32)
        y = _run(src, x)
        for p in ("q.onnx", "ort.onnx"):
            err[p] = err.get(p, 0.0) + np.linalg.norm(_run(str(tmp_path / p), x) - y) / np.linalg.norm(y) / 16
    print(bits, block, err, {p: os.path.getsize(tmp_path / p) for p in ("f.onnx", "q.onnx", "ort.onnx")})
    assert err["q.onnx"] <= err["ort.onnx"] * 1.02, err
    assert os.path.getsize(tmp_path / "q.onnx") <= os.path.getsize(tmp_path / "ort.onnx") * 1.01


# --- Gather tables and float16 weights ---

V, D = 512, 256


def _embed_model(rng: np.random.Generator, dtype: type, opset: int) -> onnx.ModelProto:
    """ids[4] -> Gather(emb[V,D]) -> e[4,D] -> MatMul w[D,N] -> y[4,N]; outputs e and y."""
    emb = (rng.standard_normal((V, D)) * 0.5).astype(dtype)
    w = (rng.standard_normal((D, N)) * 0.1).astype(dtype)
    t = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Gather", ["emb", "ids"], ["e"], name="gather", axis=0),
         helper.make_node("MatMul", ["e", "w"], ["y"], name="mm")], "embed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("e", t, [4, D]), helper.make_tensor_value_info("y", t, [4, N])],
        [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _io(path: str) -> tuple[list, list]:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return [(i.name, i.type, i.shape) for i in sess.get_inputs()], [(o.name, o.type, o.shape) for o in sess.get_outputs()]


# bits, op, group, scheme, table dtype, opset, bound on the output's relative error
EMBED_CASES = [
    (8, "dequantize_linear", None, "symmetric", np.float32, 21, 0.01),   # per-row int8
    (4, "dequantize_linear", 64, "affine", np.float32, 21, 0.12),        # blockwise int4
    (4, "dequantize_linear", 32, "symmetric", np.float32, 21, 0.15),
    (4, "matmul_nbits", 32, "affine", np.float32, 21, 0.12),             # GatherBlockQuantized
    (4, "matmul_nbits", 64, "symmetric", np.float32, 21, 0.15),
    (8, "matmul_nbits", 64, "symmetric", np.float32, 21, 0.01),
    (8, "dequantize_linear", None, "symmetric", np.float16, 21, 0.01),   # float16 scales, float16 out
    (4, "dequantize_linear", 64, "affine", np.float16, 21, 0.12),
    (8, "dequantize_linear", None, "symmetric", np.float16, 17, 0.01),   # opset 17: float32 out + Cast
    (4, "matmul_nbits", 32, "affine", np.float16, 21, 0.12),
    (8, "matmul_nbits", 128, "affine", np.float16, 21, 0.01),
]


@pytest.mark.parametrize("bits,op,group,scheme,dtype,opset,bound", EMBED_CASES)
def test_gather_tables_and_float16_weights(tmp_path, bits, op, group, scheme, dtype, opset, bound):
    rng = np.random.default_rng(bits + opset)
    model = _embed_model(rng, dtype, opset)
    src = _save(model, str(tmp_path / "f.onnx"))
    dst = str(tmp_path / "q.onnx")
    r = qp.onnx_quantize(src, dst, bits=bits, op=op, group_size=group, scheme=scheme)
    assert [t.name for t in r.tensors] == ["emb", "w"] and r.skipped == ()
    assert [t.input_bytes for t in r.tensors] == [V * D * np.dtype(dtype).itemsize, D * N * np.dtype(dtype).itemsize]
    onnx.checker.check_model(dst, full_check=True)
    assert _io(dst) == _io(src)  # same inputs and outputs, same element types
    q = onnx.load(dst)
    ops = [(n.op_type, n.domain) for n in q.graph.node]
    if op == "dequantize_linear":
        assert ("Gather", "") in ops and ops.count(("DequantizeLinear", "")) == 2
        assert ops.count(("Cast", "")) == (2 if dtype == np.float16 and opset < 19 else 0)
    else:
        assert ops == [("GatherBlockQuantized", "com.microsoft"), ("MatMulNBits", "com.microsoft")]
    # the rows onnxruntime gathers are quantpress's own decoded rows
    half_scales = dtype == np.float16 and (op == "matmul_nbits" or opset >= 19)
    emb = numpy_helper.to_array(model.graph.initializer[0]).astype(np.float32)
    ours = qp.quantize(emb, bits, None if group == "channel" else group, scheme, axis=-1,
                       scale_dtype="float16" if half_scales else "float32").dequantize()
    ids = np.array([0, 7, 511, 7], np.int64)
    sess_q = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    e_q, y_q = sess_q.run(None, {"ids": ids})
    e_ref, y_ref = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    assert e_q.dtype == y_q.dtype == dtype
    if dtype == np.float32:
        assert e_q.tobytes() == ours[ids].tobytes()
    else:  # float16 output: the float32 value rounded once
        assert np.array_equal(e_q, ours[ids].astype(np.float16))
    if op == "dequantize_linear":
        assert np.array_equal(_decode_dq(q, "emb" if not (dtype == np.float16 and opset < 19) else "emb_dequantized"),
                              ours)
    in_model = ours.astype(dtype).astype(np.float32)  # the report's error is that of the values the model uses
    assert r.tensors[0].rel_error == pytest.approx(np.linalg.norm(in_model - emb) / np.linalg.norm(emb), rel=1e-5)
    rel = lambda a, b: float(np.linalg.norm(a.astype(np.float32) - b.astype(np.float32)) / np.linalg.norm(b.astype(np.float32)))  # noqa: E731
    assert rel(e_q, e_ref) < bound and rel(y_q, y_ref) < 2 * bound, (rel(e_q, e_ref), rel(y_q, y_ref))
    src_bits = 16 if dtype == np.float16 else 32
    assert os.path.getsize(dst) < os.path.getsize(src) * (bits / src_bits + 0.1)


def test_gather_skips_and_tied_tables(tmp_path):
    rng = np.random.default_rng(11)
    model = _embed_model(rng, np.float32, 21)
    # a tied head: the same table also used by Gemm(transB=1), i.e. grouped along the same axis
    model.graph.node.append(helper.make_node("Gemm", ["e", "emb"], ["logits"], transB=1))
    model.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, V]))
    src = _save(model, str(tmp_path / "f.onnx"))
    r = qp.onnx_quantize(src, str(tmp_path / "dq.onnx"), bits=8)
    assert [t.name for t in r.tensors] == ["emb", "w"]  # one DequantizeLinear shared by Gather and Gemm
    ids = np.array([1, 2, 3, 4], np.int64)
    ref = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    got = ort.InferenceSession(str(tmp_path / "dq.onnx"), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    for a, b in zip(got, ref):
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.02
    r = qp.onnx_quantize(src, str(tmp_path / "nb.onnx"), bits=4, op="matmul_nbits", group_size=32)
    assert dict(r.skipped) == {"emb": "used by Gather and by MatMul/Gemm (no one MatMulNBits/GatherBlockQuantized form)"}
    # Gather along axis 1 has no GatherBlockQuantized form; D not a multiple of the group is skipped
    model = _embed_model(rng, np.float32, 21)
    model.graph.node[0].attribute[0].i = 1
    model.graph.node[1].CopyFrom(helper.make_node("Identity", ["e"], ["y"]))
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, [V, 4]) for n in ("e", "y")])
    src = _save(model, str(tmp_path / "ax1.onnx"))
    r = qp.onnx_quantize(src, str(tmp_path / "ax1q.onnx"), bits=4, op="matmul_nbits", group_size=32)
    assert dict(r.skipped) == {"emb": "Gather along axis 1 has no GatherBlockQuantized form"}
    r = qp.onnx_quantize(src, str(tmp_path / "ax1dq.onnx"), bits=4, group_size=96)
    assert dict(r.skipped) == {"emb": "D=256 is not a multiple of group_size 96"}
    r = qp.onnx_quantize(src, str(tmp_path / "ax1dq.onnx"), bits=4, group_size=64)  # DequantizeLinear serves any axis
    assert [t.name for t in r.tensors] == ["emb"]
    ids = np.array([0, 1, 2, 3], np.int64)
    ref = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    got = ort.InferenceSession(str(tmp_path / "ax1dq.onnx"), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    assert got.shape == ref.shape == (V, 4) and np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.12


def _batched_model(rng: np.random.Generator, dtype: type, opset: int) -> onnx.ModelProto:
    """x[3,4,K] -> MatMul w[3,K,N] (a stack of three matrices) -> y[3,4,N]."""
    t = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    w = (rng.standard_normal((3, K, N)) * 0.1).astype(dtype)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "batched",
                              [helper.make_tensor_value_info("x", t, [3, 4, K])],
                              [helper.make_tensor_value_info("y", t, [3, 4, N])], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("bits,group,scheme,dtype,bound", [
    (8, None, "symmetric", np.float32, 0.01),  # per channel: one block of all K per (matrix, column)
    (4, 64, "affine", np.float32, 0.12),
    (4, 32, "symmetric", np.float16, 0.15),
])
def test_nd_matmul_weights(tmp_path, bits, group, scheme, dtype, bound):
    rng = np.random.default_rng(12)
    model = _batched_model(rng, dtype, 21)
    src = _save(model, str(tmp_path / "f.onnx"))
    dst = str(tmp_path / "q.onnx")
    r = qp.onnx_quantize(src, dst, bits=bits, group_size=group, scheme=scheme)
    assert [t.name for t in r.tensors] == ["w"] and r.skipped == ()
    onnx.checker.check_model(dst, full_check=True)
    assert _io(dst) == _io(src)
    w = numpy_helper.to_array(model.graph.initializer[0]).astype(np.float32)
    # quantpress's own result for each matrix's columns (K last), moved back
    moved = np.ascontiguousarray(np.moveaxis(w, 1, -1).reshape(-1, K))
    ours = qp.quantize(moved, bits, group, scheme, axis=-1,
                       scale_dtype="float16" if dtype == np.float16 else "float32").dequantize()
    ours = np.moveaxis(ours.reshape(3, N, K), -1, 1)
    assert np.array_equal(_decode_dq(onnx.load(dst), "w"), ours)
    x = rng.standard_normal((3, 4, K)).astype(dtype)
    y_ref, y_q = _run(src, x), _run(dst, x)
    assert y_q.dtype == dtype
    ref32 = y_ref.astype(np.float32)
    assert np.linalg.norm(y_q.astype(np.float32) - ref32) / np.linalg.norm(ref32) < bound
    hand = np.matmul(x.astype(np.float32), ours)
    assert np.abs(y_q.astype(np.float32) - hand).max() <= (2e-2 if dtype == np.float16 else 1e-3) * np.abs(hand).max()
    assert os.path.getsize(dst) < os.path.getsize(src) * (bits / (16 if dtype == np.float16 else 32) + 0.1)


def test_nd_weights_skipped_where_no_form_exists(tmp_path):
    rng = np.random.default_rng(13)
    src = _save(_batched_model(rng, np.float32, 21), str(tmp_path / "f.onnx"))
    r = qp.onnx_quantize(src, str(tmp_path / "nb.onnx"), bits=4, op="matmul_nbits", group_size=32)
    assert r.tensors == () and dict(r.skipped) == {"w": "an N-D weight has no MatMulNBits form"}
    src = _save(_batched_model(rng, np.float32, 17), str(tmp_path / "old.onnx"))
    r = qp.onnx_quantize(src, str(tmp_path / "q.onnx"), bits=8)
    assert r.tensors == () and dict(r.skipped) == {"w": "an N-D weight needs opset >= 21 (blockwise DequantizeLinear)"}
    x = rng.standard_normal((3, 4, K)).astype(np.float32)
    assert np.array_equal(_run(str(tmp_path / "q.onnx"), x), _run(src, x))  # written back unchanged
