"""Byte layout of containers (docs/format.md, "Container"): the files written by
``save_compressed`` and ``compress`` are rebuilt independently from the documented layout and
compared byte for byte, so a change to the padding or ordering cannot go unnoticed."""

import json
import struct

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import quantpress as qp
from quantpress.container import TENSORS_KEY
from quantpress.pipeline import header_reserve
from quantpress.recipe import get_recipe


def _layout(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8:8 + n]), data[8 + n:]


def _expected(entries, pad_to=None):
    """The documented layout: header JSON (compact, ``__metadata__`` first, tensors in the order
    written), spaces to a multiple of 8 (or to ``pad_to`` bytes of file before the data), data."""
    header, records, body, offset = {}, {}, b"", 0
    for name, (parts, record) in entries.items():
        for pname, arr in parts.items():
            raw = np.ascontiguousarray(arr).tobytes()
            dt = {"uint8": "U8", "float16": "F16", "float32": "F32"}[arr.dtype.name]
            header[pname] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
            body += raw
            offset += len(raw)
        records[name] = record
    meta = {"quantpress.format_version": "1", TENSORS_KEY: json.dumps(records, separators=(",", ":"))}
    head = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode()
    head += b" " * ((-len(head) % 8) if pad_to is None else pad_to - 8 - len(head))
    return struct.pack("<Q", len(head)) + head + body


def _scalar(qt, dtype="float32"):
    parts = {"q": qt.codes, "scale": qt.scales}
    if qt.zeros is not None:
        parts["zero"] = qt.zeros
    params = {"bits": qt.bits, "group_size": qt.group_size, "axis": qt.axis, "scheme": qt.scheme, "algorithm": qt.method}
    return parts, {"method": "scalar", "params": params, "shape": list(qt.shape), "dtype": dtype}


def _named(name, parts_record):
    parts, record = parts_record
    return {f"{name}.{k}": v for k, v in parts.items()}, record


def test_save_compressed_bytes_follow_the_documented_layout(tmp_path, rng):
    w = rng.standard_normal((48, 256)).astype(np.float32)
    q4, q8 = qp.quantize(w, bits=4, group_size=128), qp.quantize(w, bits=8, group_size=None, scheme="symmetric")
    bias = rng.standard_normal(48).astype(np.float32)
    qp.save_compressed(tmp_path / "m.safetensors", {"a.weight": q4, "b.weight": q8, "b.bias": bias})
    want = _expected({"a.weight": _named("a.weight", _scalar(q4)), "b.weight": _named("b.weight", _scalar(q8)),
                      "b.bias": ({"b.bias": bias}, {"method": "none", "params": {}, "shape": [48], "dtype": "float32"})})
    assert (tmp_path / "m.safetensors").read_bytes() == want
    assert os_listdir(tmp_path) == ["m.safetensors"]


def os_listdir(p):
    import os

    return sorted(os.listdir(p))


@pytest.mark.parametrize("recipe", ["int8", "int4"])
def test_compress_writes_the_data_once_after_a_reserved_header(tmp_path, rng, recipe):
    tensors = {"layers.0.attn.weight": rng.standard_normal((64, 256)).astype(np.float32),
               "layers.0.norm.weight": np.ones(64, np.float32),
               "layers.1.ffn.weight": rng.standard_normal((32, 4, 128)).astype(np.float32)}
    save_file(tensors, str(tmp_path / "in.safetensors"))
    qp.compress(tmp_path / "in.safetensors", tmp_path / "out.safetensors", recipe)
    listing = [(n, t.shape, "float32") for n, t in tensors.items()]
    plans = get_recipe(recipe).plan_all(listing)
    reserve = header_reserve(listing, plans)
    entries = {}
    for name, w in tensors.items():  # safetensors writes (and compress reads) in sorted order
        plan = plans[name]
        if plan.method == "keep":
            entries[name] = ({name: w}, {"method": "none", "params": {}, "shape": list(w.shape), "dtype": "float32"})
        else:
            p = plan.params
            qt = qp.quantize(w, bits=p["bits"], group_size=p["group_size"], scheme=p["scheme"], axis=p["axis"],
                             scale_dtype=p["scale_dtype"])
            entries[name] = _named(name, _scalar(qt))
    entries = dict(sorted(entries.items()))
    got = (tmp_path / "out.safetensors").read_bytes()
    assert got == _expected(entries, pad_to=reserve)
    n, header, _ = _layout(tmp_path / "out.safetensors")
    assert 8 + n == reserve and reserve % 8 == 0
    assert len(header_text := got[8:8 + n].rstrip(b" ")) < n  # padded, and the padding is spaces only
    json.loads(header_text)
    with safe_open(str(tmp_path / "out.safetensors"), "np") as f:  # any safetensors reader opens it
        assert sorted(f.keys()) == sorted(set(header) - {"__metadata__"}) and f.get_tensor("layers.0.norm.weight").sum() == 64
    assert os_listdir(tmp_path) == ["in.safetensors", "out.safetensors"]


@pytest.mark.parametrize("names", [["w"], ["modèle.çouche.0.wéight", 'a"b\\c'], [f"l.{i}.x" * 20 for i in range(50)]])
@pytest.mark.parametrize("recipe", ["int8", "int4", "nf4", "q4_k", "vq2"])
def test_header_reserve_bounds_the_header(tmp_path, rng, names, recipe):
    shapes = [(16, 256), (4, 8, 256), (256,)]
    listing = [(n, shapes[i % 3], "float32") for i, n in enumerate(names)]
    plans = get_recipe(recipe).plan_all(listing)
    src = tmp_path / "in.safetensors"
    save_file({n: rng.standard_normal(s).astype(np.float32) for n, s, _ in listing}, str(src))
    qp.compress(src, tmp_path / "out.safetensors", recipe)
    n, header, _ = _layout(tmp_path / "out.safetensors")
    text = (tmp_path / "out.safetensors").read_bytes()[8:8 + n].rstrip(b" ")
    assert 8 + n == header_reserve(listing, plans)  # the header fit: no second copy was made
    assert len(text) < n
    assert sorted(qp.load(tmp_path / "out.safetensors")) == sorted(names)


def test_a_header_larger_than_the_reserve_falls_back_to_a_copy(tmp_path, rng):
    from quantpress.container import ContainerWriter

    w = rng.standard_normal((8, 128)).astype(np.float32)
    with ContainerWriter(tmp_path / "a.safetensors", reserve=64) as wr:
        wr.add("w", qp.quantize(w))
    qp.save_compressed(tmp_path / "b.safetensors", {"w": qp.quantize(w)})
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert os_listdir(tmp_path) == ["a.safetensors", "b.safetensors"]
