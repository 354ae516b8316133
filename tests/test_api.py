"""The public surface: docstring examples, README examples, the typed stub, the CLI."""

import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

import quantpress as qp
import quantpress.budget
import quantpress.calibrate
import quantpress.container
import quantpress.demo
import quantpress.formats
import quantpress.formats.gguf_fmt
import quantpress.formats.gguf_write
import quantpress.formats.onnx_write
import quantpress.gguf
import quantpress.kmeans
import quantpress.distill
import quantpress.online
import quantpress.pipeline
import quantpress.pq
import quantpress.prune
import quantpress.recipe
import quantpress.weight_vq
import quantpress.scalar
import quantpress.vq

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "module",
    [qp, quantpress.scalar, quantpress.gguf, quantpress.demo, quantpress.formats, quantpress.calibrate, quantpress.kmeans, quantpress.distill, quantpress.online,
     quantpress.pq, sys.modules["quantpress.prune"], quantpress.vq, quantpress.weight_vq, quantpress.formats.gguf_fmt, quantpress.formats.gguf_write, quantpress.formats.gguf_export,
     quantpress.formats.onnx_write,
     quantpress.container, quantpress.recipe, quantpress.pipeline, quantpress.budget],
)
def test_docstring_examples(module):
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0 and failed == 0


def test_public_functions_have_docstrings_with_examples():
    for name in qp.__all__:
        obj = getattr(qp, name)
        if callable(obj) and not isinstance(obj, type) and name not in ("simd_level", "get_num_threads"):
            assert obj.__doc__ and "Example" in obj.__doc__, name


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has python examples"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_stubs_match_runtime():
    out = subprocess.run([sys.executable, "-m", "mypy.stubtest", "quantpress._core"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cli_demo_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "quantpress", "demo", "--matrix", "--rows", "64", "--cols", "256", "--repeats", "1"],
                         capture_output=True, text=True, check=True)
    for name in ["int4 g128 affine", "GGUF Q4_0", "GGUF Q8_0", "bits/weight", "SQNR"]:
        assert name in out.stdout
    assert re.search(r"GGUF Q8_0\s*│\s*8\.500", out.stdout)


def test_cli_rejects_bad_arguments():
    out = subprocess.run([sys.executable, "-m", "quantpress", "demo", "--matrix", "--cols", "100"], capture_output=True, text=True)
    assert out.returncode == 2 and "multiple of 256" in out.stdout
    out = subprocess.run([sys.executable, "-m", "quantpress", "demo", "--cols", "512"], capture_output=True, text=True)
    assert out.returncode == 2 and "add --matrix" in out.stdout
