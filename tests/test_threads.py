"""Threads: identical bytes on any thread count, the GIL released, safe after fork."""

import os

import numpy as np
import pytest

import quantpress as qp
from quantpress import _core

from conftest import spin_while


@pytest.fixture
def restore_threads():
    n = qp.get_num_threads()
    yield
    qp.set_num_threads(n)


def run_all(w):
    qt = qp.quantize(w, bits=3, group_size=96)
    out = [qp.gguf_quantize(w, t) for t in qp.GGUF_TYPES]
    out += [qt.codes, qt.scales, qt.zeros, qt.dequantize()]
    out += [qp.gguf_dequantize(r, t, w.shape) for r, t in zip(out, qp.GGUF_TYPES)]
    return out


def test_thread_count_invariance(restore_threads, rng):
    w = (rng.standard_normal((512, 3072)) * 0.02).astype(np.float32)  # many parallel chunks
    results = []
    for n in (1, 2, 7):
        qp.set_num_threads(n)
        assert qp.get_num_threads() == n
        results.append(run_all(w))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


def test_set_num_threads_rejects_bad_values(restore_threads):
    for bad in (0, -1, 100000):
        with pytest.raises(qp.QuantpressError):
            qp.set_num_threads(bad)


def test_env_variable_sets_threads(tmp_path):
    import subprocess
    import sys

    code = "import quantpress as qp; print(qp.get_num_threads())"
    env = {**os.environ, "QUANTPRESS_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"


def test_gil_is_released(restore_threads, rng):
    # A Python thread counts in a loop while the main thread runs a long Rust call (conftest).
    w = rng.standard_normal((2048, 4096)).astype(np.float32)
    elapsed, counted, rate = spin_while(lambda: qp.quantize(w, bits=3, group_size=8))
    assert elapsed > 0.05, "the call was too short to tell"
    assert counted > rate * elapsed * 0.25, (counted, rate, elapsed)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_works_after_fork(rng):
    w = rng.standard_normal((256, 1024)).astype(np.float32)
    want = qp.gguf_quantize(w, "Q4_0")  # the pool exists in the parent now
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not hang on the parent's (absent) worker threads
        ok = np.array_equal(qp.gguf_quantize(w, "Q4_0"), want)
        os.write(wfd, b"1" if ok else b"0")
        os._exit(0)
    os.close(wfd)
    _, status = os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1" and status == 0
