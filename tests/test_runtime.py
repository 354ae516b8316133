"""SIMD level selection: detection, the QUANTPRESS_SIMD override, the test switch."""

import os
import subprocess
import sys

import quantpress as qp
from quantpress import _core


def run(code, **env):
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_level_is_the_detected_one_by_default():
    assert qp.simd_level() in ("scalar", "avx2", "avx512", "neon")
    assert run("import quantpress as qp; print(qp.simd_level())") == _core.detected_simd_level()


def test_environment_forces_a_lower_level():
    assert run("import quantpress as qp; print(qp.simd_level())", QUANTPRESS_SIMD="scalar") == "scalar"
    # an unknown or unsupported level is ignored: the detected one runs
    assert run("import quantpress as qp; print(qp.simd_level())", QUANTPRESS_SIMD="avx9000") == _core.detected_simd_level()


def test_switch_round_trip():
    best = _core.detected_simd_level()
    _core._set_simd_level("scalar")
    try:
        assert qp.simd_level() == "scalar"
    finally:
        _core._set_simd_level(best)
    assert qp.simd_level() == best
