"""The model demo (``quantpress demo``, quantpress.demo.compare_recipes), the shipped digits
model and test split, and ``quantpress eval --plot``."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import quantpress as qp
from quantpress import demo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows():
    return demo.compare_recipes()


def test_shipped_files_are_small_and_consistent():
    assert os.path.getsize(demo.MODEL) < 500_000 and os.path.getsize(demo.TEST_SET) < 150_000
    m = qp.load(demo.MODEL)
    assert {n: tuple(m[n].shape) for n in m} == {
        "fc1.weight": (256, 64), "fc1.bias": (256,), "fc2.weight": (128, 256), "fc2.bias": (128,),
        "fc3.weight": (10, 128), "fc3.bias": (10,)}
    assert all(m[n].dtype == np.float32 for n in m)
    x, y = demo.load_test_set()
    assert x.shape == (450, 64) and y.shape == (450,) and x.min() >= 0 and x.max() <= 1
    assert np.bincount(y).min() >= 43  # stratified: every digit is there


def test_shipped_split_is_sklearns_and_the_example_forward_agrees():
    """The test split is the one the training script held out, and the script's forward pass
    (the model's definition) gives the demo's accuracy."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import make_digits_mlp as ex
    finally:
        sys.path.pop(0)
    _, xte, _, yte = ex.load_split()
    with np.load(demo.TEST_SET) as d:
        assert np.array_equal(d["x"], xte) and np.array_equal(d["y"], yte)
    m = qp.load(demo.MODEL)
    params = [m[f"fc{i}.{k}"] for i in (1, 2, 3) for k in ("weight", "bias")]
    logits, _ = ex.forward(params, (xte / 16.0).astype(np.float32))
    x, y = demo.load_test_set()
    assert float((logits.argmax(axis=1) == yte).mean() * 100) == demo.mlp_accuracy(m, x, y)


def test_compare_recipes_table(rows):
    names = [r.name for r in rows]
    assert names == ["float32", *demo.RECIPES, "budget 3 bpw"]
    by = {r.name: r for r in rows}
    assert by["float32"].accuracy > 95 and by["float32"].bits_per_weight == 32
    assert abs(by["int8"].accuracy - by["float32"].accuracy) <= 1.0
    assert by["int8"].rel_error < 0.01
    for r in rows[1:]:
        assert r.file_bytes < by["float32"].file_bytes and 0 < r.rel_error < 0.5, r
        assert r.accuracy > 90, r
    assert by["budget 3 bpw"].bits_per_weight <= 3.0
    # the budget row is the smallest file, and at least as accurate in weights as the 2-bit VQ
    assert by["budget 3 bpw"].file_bytes == min(r.file_bytes for r in rows)
    assert by["budget 3 bpw"].rel_error <= by["vq2"].rel_error
    # every 4-bit or larger recipe has less weight error than the ~3-bit rows
    assert max(by[n].rel_error for n in ("int8", "int4", "nf4", "q4_k_m")) < by["vq2"].rel_error


def test_cli_demo_prints_every_recipe():
    out = subprocess.run([sys.executable, "-m", "quantpress", "demo"], capture_output=True, text=True, check=True)
    for name in ["float32", *demo.RECIPES, "budget 3 bpw", "accuracy %", "bits/weight"]:
        assert name in out.stdout, name
    assert re.search(r"float32\s*│\s*203\.9\s*│\s*32\.000", out.stdout)


def _compressed(tmp_path):
    dst = tmp_path / "c.safetensors"
    qp.compress(demo.MODEL, dst, recipe="int4")
    return dst


def test_eval_plot(tmp_path):
    """With matplotlib (the ``plot`` extra, in the ``test`` extra) a PNG is written; without
    it the command fails with the install hint and writes nothing."""
    dst, png = _compressed(tmp_path), tmp_path / "err.png"
    out = subprocess.run([sys.executable, "-m", "quantpress", "eval", demo.MODEL, str(dst), "--plot", str(png)],
                         capture_output=True, text=True)
    if importlib.util.find_spec("matplotlib") is not None:
        assert out.returncode == 0, out.stdout + out.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    else:
        assert out.returncode == 1 and "quantpress[plot]" in out.stdout and not png.exists()


def test_eval_json_lists_every_tensor(tmp_path):
    dst = _compressed(tmp_path)
    out = subprocess.run([sys.executable, "-m", "quantpress", "eval", demo.MODEL, str(dst), "--json"],
                         capture_output=True, text=True, check=True)
    rows = {r["name"]: r for r in json.loads(out.stdout)["tensors"]}
    assert set(rows) == set(qp.load(demo.MODEL))
    assert rows["fc2.weight"]["method"] == "scalar" and 0 < rows["fc2.weight"]["rel_error"] < 0.2
