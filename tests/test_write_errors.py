"""Every writer on a full disk: a subprocess whose file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored)
is smaller than the output, so a real write() fails with EFBIG part way. Each writer must raise
a clear error and leave no file under the output name, no temporary file and the input as it was
(an output that existed before keeps its old bytes). An interrupted run (Ctrl-C, or kill -9
part way) leaves nothing under the output name either."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import weight_like

resource = pytest.importorskip("resource")  # POSIX only; Linux CI has it

LIMIT = 64 * 1024  # every output below is several times larger

CHILD = r"""
import json, os, resource, signal, sys
import numpy as np
import quantpress as qp
case, src, dst = sys.argv[1:4]
if case == "onnx_quantize":
    import onnx  # imported before the limit, like everything the writer needs
entries = {"w": qp.quantize(np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32), bits=8)}
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[4]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    if case == "compress":
        qp.compress(src, dst, "int8")
    elif case == "compress_reserve":
        qp.compress(src, dst, "int4")
    elif case == "save_compressed":
        qp.save_compressed(dst, entries)
    elif case == "gguf_requantize":
        qp.gguf_requantize(src, dst, "Q8_0")
    elif case == "gguf_requantize_split":
        qp.gguf_requantize(src, dst, "Q8_0", max_shard_size=300_000)
    elif case == "gguf_export":
        qp.gguf_export(src, dst, "Q8_0")
    elif case == "onnx_quantize":
        qp.onnx_quantize(src, dst, bits=8)
    elif case == "onnx_quantize_external":
        qp.onnx_quantize(src, dst, bits=4, op="matmul_nbits", group_size=32)
except BaseException as e:
    print(json.dumps({"error": type(e).__name__, "oserror": isinstance(e, OSError),
                      "quantpress": isinstance(e, qp.QuantpressError), "errno": getattr(e, "errno", None),
                      "message": str(e)}))
else:
    print(json.dumps({"error": None}))
"""


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _safetensors(folder, rng) -> str:
    path = str(folder / "m.safetensors")
    save_file({"a.weight": weight_like(rng, (512, 256)), "b.weight": weight_like(rng, (256, 512)),
               "b.bias": np.zeros(256, np.float32)}, path)
    return path


def _gguf(folder, rng, layers: int = 1) -> str:
    gguf = pytest.importorskip("gguf")
    path = str(folder / "m.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(layers)
    for i in range(layers):
        w.add_tensor(f"blk.{i}.ffn_up.weight", (rng.standard_normal((512, 512)) * 0.02).astype(np.float16))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(512, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _onnx(folder, rng, external: bool = False) -> str:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = rng.standard_normal((512, 512)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(1024, np.float32), "unused")])
    path = str(folder / "m.onnx")
    kw = dict(save_as_external_data=True, all_tensors_to_one_file=True, location="m.data", size_threshold=0) if external else {}
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path, **kw)
    return path


SOURCES = {"compress": _safetensors, "compress_reserve": _safetensors, "save_compressed": _safetensors,
           "gguf_requantize": _gguf, "gguf_requantize_split": lambda folder, rng: _gguf(folder, rng, layers=2),
           "gguf_export": _safetensors, "onnx_quantize": _onnx,
           "onnx_quantize_external": lambda folder, rng: _onnx(folder, rng, external=True)}
SUFFIX = {"gguf_requantize": ".gguf", "gguf_requantize_split": ".gguf", "gguf_export": ".gguf", "onnx_quantize": ".onnx", "onnx_quantize_external": ".onnx"}


def _run(case: str, src: str, dst: str, limit: int) -> dict:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, case, src, dst, str(limit)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
@pytest.mark.parametrize("case", sorted(SOURCES))
def test_a_full_disk_leaves_no_half_file(tmp_path, rng, case, existing):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    src = SOURCES[case](tmp_path / "in", rng)
    inputs = {p: _sha(tmp_path / "in" / p) for p in os.listdir(tmp_path / "in")}
    dst = out / ("result" + SUFFIX.get(case, ".safetensors"))
    if existing:
        dst.write_bytes(b"the previous output")
    # without the limit the same call succeeds and writes more than the limit
    (tmp_path / "ok").mkdir()
    ok = _run(case, src, str(tmp_path / "ok" / dst.name), 2**40)
    assert ok == {"error": None}
    written = {p: os.path.getsize(tmp_path / "ok" / p) for p in os.listdir(tmp_path / "ok")}
    assert max(written.values()) > 2 * LIMIT, written  # (external ONNX data: the .data file)
    assert len(written) == (2 if case in ("gguf_requantize_split", "onnx_quantize_external") else 1), written
    got = _run(case, src, str(dst), LIMIT)
    assert got["error"] is not None, "the write did not fail"
    assert got["oserror"] or got["quantpress"], got
    assert got["errno"] == errno.EFBIG or "File too large" in got["message"], got
    assert sorted(os.listdir(out)) == (["result" + SUFFIX.get(case, ".safetensors")] if existing else []), \
        "a half or temporary file was left behind"
    if existing:
        assert dst.read_bytes() == b"the previous output"
    assert {p: _sha(tmp_path / "in" / p) for p in os.listdir(tmp_path / "in")} == inputs


INTERRUPT = r"""
import os, signal, sys
import quantpress as qp
case, src, dst, how = sys.argv[1:5]

def progress(done, total, name):
    if how == "kill":  # as `kill -9` or the OOM killer would: no cleanup code runs at all
        os.kill(os.getpid(), signal.SIGKILL)
    raise KeyboardInterrupt  # Ctrl-C after the first tensor

try:
    if case == "compress":
        qp.compress(src, dst, "int8", progress=progress)
    elif case == "gguf_requantize":
        qp.gguf_requantize(src, dst, "Q8_0", progress=progress)
    else:
        qp.onnx_quantize(src, dst, bits=8, progress=progress)
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
@pytest.mark.parametrize("case", ["compress", "gguf_requantize", "onnx_quantize"])
def test_an_interrupted_run_leaves_nothing_under_the_output_name(tmp_path, rng, case, how):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    src = SOURCES[case](tmp_path / "in", rng)
    dst = out / ("result" + SUFFIX.get(case, ".safetensors"))
    proc = subprocess.run([sys.executable, "-c", INTERRUPT, case, src, str(dst), how], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if how == "kill":
        assert proc.returncode == -9, proc.stderr[-2000:]
        # only hidden temporary files may stay behind; never a file under the output name
        assert not dst.exists() and all(p.startswith(".") for p in os.listdir(out)), os.listdir(out)
    else:
        assert proc.returncode == 0 and proc.stdout.strip() == "interrupted", proc.stderr[-2000:]
        assert os.listdir(out) == []  # the temporary files are removed too
