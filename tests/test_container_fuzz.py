"""Fuzzing qp.load: a mutated or truncated container either loads and decodes, or raises
QuantpressError naming the file; never another exception, a crash or a hang."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quantpress as qp


def _container(path) -> None:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((16, 256)) * 0.02).astype(np.float32)
    qp.save_compressed(path, {
        "a": qp.quantize(w, bits=4, group_size=64),
        "b": qp.quantize(w, bits=4, group_size=64, scheme="nf4", double_quant=True),
        "c": qp.prune(w, sparsity=0.5),
        "d": np.arange(8, dtype=np.float32),
    })


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8), st.integers(0, 10**6),
       st.booleans())
def test_fuzz_container(tmp_path, edits, cut, truncate):
    good = tmp_path / "good.safetensors"
    if not good.exists():
        _container(good)
    raw = bytearray(good.read_bytes())
    for pos, byte in edits:
        raw[pos % len(raw)] = byte
    if truncate:
        raw = raw[: cut % (len(raw) + 1)]
    bad = tmp_path / "fuzzed.safetensors"
    bad.write_bytes(bytes(raw))
    try:
        c = qp.load(bad)
        for name in c:
            np.asarray(c[name])
    except qp.QuantpressError as e:
        assert "fuzzed.safetensors" in str(e)
