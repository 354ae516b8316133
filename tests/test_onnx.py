"""ONNX reader (initializers, Constant tensors, external data, hostile files) and the weight-only
ONNX writer (DequantizeLinear / MatMulNBits): checker, onnxruntime, exact decoded values."""

from __future__ import annotations

import hashlib
import os

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 10**6))
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
