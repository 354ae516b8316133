"""Model-file readers: round trips against the real writers, laziness, and hostile files.

Every malformed file must give a QuantpressError (never another exception, a hang or a big
allocation); the fuzz tests mutate valid files at random and hold the readers to that.
PyTorch fixtures are written without torch: fake ``torch``/``torch._utils`` modules make the
standard pickler emit the same GLOBAL/REDUCE/BINPERSID opcodes ``torch.save`` does.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
import struct
import sys
import types
import zipfile
import zlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import quantpress as qp
from quantpress.formats import open_model
from quantpress.formats.base import DTYPES

RNG = np.random.default_rng(0)


def _array(dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == np.bool_:
        return RNG.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return RNG.integers(max(info.min, -1000), min(info.max, 1000), shape).astype(dtype)
    return RNG.standard_normal(shape).astype(np.float32).astype(dtype)


def _read_all(path) -> dict[str, np.ndarray]:
    with open_model(path) as m:
        return {k: np.array(t.numpy()) for k, t in m.items()}


# ---------------------------------------------------------------- safetensors

def _st_header(path) -> tuple[dict, bytes]:
    import json

    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _st_write(path, header: dict, data: bytes) -> None:
    import json

    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_safetensors_round_trip_every_dtype(tmp_path, name):
    dt = DTYPES[name][0]
    arrays = {"a": _array(dt, (3, 5)), "b.c": _array(dt, (7,)), "empty": _array(dt, (0, 4)), "scalar": _array(dt, ())}
    path = tmp_path / "m.safetensors"
    save_file(arrays, str(path), metadata={"k": "v"})
    with open_model(path) as m:
        assert m.format == "safetensors" and m.metadata == {"k": "v"} and set(m) == set(arrays)
        for k, a in arrays.items():
            t = m[k]
            assert (t.name, t.shape, t.dtype, t.numpy_dtype, t.nbytes) == (k, a.shape, name, a.dtype, a.nbytes)
            got = t.numpy()
            assert got.dtype == a.dtype and got.tobytes() == a.tobytes() and not got.flags.writeable


def test_dispatch_uses_magic_not_extension(tmp_path):
    path = tmp_path / "model.npz"  # really safetensors
    save_file({"w": np.ones(3, np.float32)}, str(path))
    assert open_model(path).format == "safetensors"
    np.save(tmp_path / "x.bin", np.ones(3))
    os.rename(tmp_path / "x.bin.npy", tmp_path / "weights.safetensors")
    assert open_model(tmp_path / "weights.safetensors").format == "npy"


def test_safetensors_is_lazy(tmp_path):
    """A 64 MiB tensor behind a small one: opening and reading the small one maps only it."""
    path = tmp_path / "big.safetensors"
    big = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (16 << 20,), (0,))
    save_file({"big": np.ascontiguousarray(big), "small": np.arange(4, dtype=np.float32)}, str(path))
    with open_model(path) as m:
        small = m["small"].numpy()
        assert isinstance(small, np.memmap) and small.nbytes == 16 and m["big"].nbytes == 64 << 20
        assert small.offset >= 0 and list(small) == [0, 1, 2, 3]


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_model(tmp_path / "nope.safetensors")


def _good_st(tmp_path):
    path = tmp_path / "g.safetensors"
    save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(4, dtype=np.int16)}, str(path))
    return path


@pytest.mark.parametrize("mutate, field", [
    (lambda h: h["a"].update(dtype="F42"), "dtype"),
    (lambda h: h["a"].update(shape=[2, -3]), "shape"),
    (lambda h: h["a"].update(shape=[2**40, 2**40, 2**40]), "shape"),  # product overflows 64 bits
    (lambda h: h["a"].update(shape=[1] * 100), "dimensions"),
    (lambda h: h["a"].update(shape=[2, 2]), "data_offsets"),
    (lambda h: h["a"].update(data_offsets=[0, 10**6]), "data_offsets"),
    (lambda h: h["b"].update(data_offsets=[16, 24]), "overlaps"),
    (lambda h: h["a"].update(data_offsets=[0]), "data_offsets"),
    (lambda h: h.update(__metadata__={"k": 1}), "__metadata__"),
    (lambda h: h.update(x=[1]), "entry"),
])
def test_safetensors_bad_headers(tmp_path, mutate, field):
    path = _good_st(tmp_path)
    header, data = _st_header(path)
    mutate(header)
    _st_write(path, header, data)
    with pytest.raises(qp.QuantpressError, match=field) as e:
        open_model(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("raw, field", [
    (b"", "magic"),
    (b"\x05\x00", "magic"),
    (struct.pack("<Q", 10**12) + b"{}", "header length"),
    (struct.pack("<Q", 5) + b"{\"a\":", "header"),
    (struct.pack("<Q", 7) + b'{"a":1}', "entry must be an object"),
    (struct.pack("<Q", 4) + b"[12]", "magic"),
    (struct.pack("<Q", 2) + b"\xff\xfe", "magic"),
    (struct.pack("<Q", 14) + b'{"a":1, "a":2}', "duplicate"),
    (struct.pack("<Q", 10) + b"{" * 10, "header"),
])
def test_safetensors_bad_bytes(tmp_path, raw, field):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(qp.QuantpressError, match=field):
        open_model(path)


def test_safetensors_reader_wants_a_json_object(tmp_path):
    from quantpress.formats import safetensors_fmt

    path = tmp_path / "list.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"[12]")
    with pytest.raises(qp.QuantpressError, match="JSON object"):
        safetensors_fmt.open_file(str(path))


def test_safetensors_truncated(tmp_path):
    path = _good_st(tmp_path)
    raw = path.read_bytes()
    for cut in (4, 20, len(raw) - 3):
        path.write_bytes(raw[:cut])
        with pytest.raises(qp.QuantpressError):
            _read_all(path)


def test_safetensors_deep_json_nesting(tmp_path):
    h = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(h)) + h)
    with pytest.raises(qp.QuantpressError):
        open_model(path)


# ---------------------------------------------------------------- fuzzing helper

def _fuzz(path, data, n_bytes=8):
    """Applies random byte overwrites / truncation to a file; the reader must load or refuse."""
    raw = bytearray(path.read_bytes())
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=n_bytes))
    for i, v in edits:
        raw[i] = v
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    bad = path.with_name("fuzzed" + path.suffix)
    bad.write_bytes(bytes(raw))
    try:
        out = _read_all(bad)
    except qp.QuantpressError:
        return None
    return out


FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_fuzz_safetensors(tmp_path, data):
    path = tmp_path / "f.safetensors"
    if not path.exists():
        save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(4, dtype=np.int16)}, str(path),
                  metadata={"m": "x"})
    _fuzz(path, data)


# ---------------------------------------------------------------- npy / npz

@pytest.mark.parametrize("name", sorted(set(DTYPES) - {"BF16", "F8_E4M3", "F8_E5M2"}))  # .npy cannot hold ml_dtypes
def test_npz_round_trip(tmp_path, name):
    dt = DTYPES[name][0]
    arrays = {"w": _array(dt, (4, 6)), "v": _array(dt, (5,)), "f": np.asfortranarray(_array(dt, (3, 2)))}
    for save, mapped in ((np.savez, True), (np.savez_compressed, False)):
        path = tmp_path / "m.npz"
        save(path, **arrays)
        with open_model(path) as m:
            assert m.format == "npz" and set(m) == set(arrays)
            for k, a in arrays.items():
                got = m[k].numpy()
                assert m[k].dtype == name and m[k].shape == a.shape
                np.testing.assert_array_equal(got, a)
                assert isinstance(got, np.memmap) == mapped


def test_npy_round_trip_and_big_endian(tmp_path):
    a = RNG.standard_normal((3, 4)).astype(">f4")
    np.save(tmp_path / "x.npy", a)
    m = open_model(tmp_path / "x.npy")
    assert (m.format, list(m), m["x"].dtype) == ("npy", ["x"], "F32")
    np.testing.assert_array_equal(m["x"].numpy(), a)


def test_npy_refuses_object_arrays(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(qp.QuantpressError, match="object arrays"):
        open_model(tmp_path / "o.npy")
    np.savez(tmp_path / "o.npz", o=np.array([None, 1], dtype=object))
    with pytest.raises(qp.QuantpressError, match="object arrays"):
        open_model(tmp_path / "o.npz")


def test_npy_shape_past_the_file(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 2), np.float32))
    raw = (tmp_path / "x.npy").read_bytes().replace(b"(2, 2)", b"(9, 9)")
    (tmp_path / "x.npy").write_bytes(raw)
    with pytest.raises(qp.QuantpressError, match="npy shape"):
        open_model(tmp_path / "x.npy")


def test_npz_zip_bomb_refused_before_decompressing(tmp_path):
    """A member claiming 10 GB from a few KB is refused from the directory alone."""
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, a=np.zeros(1000, np.float32))
    raw = bytearray(path.read_bytes())
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24: cd + 28] = struct.pack("<I", 0xFFFF_FFF0)  # uncompressed size in the central directory
    path.write_bytes(bytes(raw))
    with pytest.raises(qp.QuantpressError, match="zip bomb"):
        open_model(path)


def test_npz_rejects_unsupported_compression(tmp_path):
    path = tmp_path / "b.npz"
    buf = io.BytesIO()
    np.save(buf, np.zeros(10))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as z:
        z.writestr("a.npy", buf.getvalue())
    with pytest.raises(qp.QuantpressError, match="compression method"):
        open_model(path)


@FUZZ
@given(data=st.data(), compressed=st.booleans())
def test_fuzz_npz(tmp_path, data, compressed):
    path = tmp_path / f"f{int(compressed)}.npz"
    if not path.exists():
        (np.savez_compressed if compressed else np.savez)(path, a=np.arange(6, dtype=np.float32), b=np.ones((2, 2), np.int8))
    _fuzz(path, data)


@FUZZ
@given(data=st.data())
def test_fuzz_npy(tmp_path, data):
    path = tmp_path / "f.npy"
    if not path.exists():
        np.save(path, np.arange(12, dtype=np.float64).reshape(3, 4))
    _fuzz(path, data)


# ---------------------------------------------------------------- PyTorch, written without torch

_STORAGE_NAMES = {"F32": "FloatStorage", "F64": "DoubleStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage",
                  "I64": "LongStorage", "I32": "IntStorage", "I16": "ShortStorage", "I8": "CharStorage",
                  "U8": "ByteStorage", "BOOL": "BoolStorage"}


class _FakeStorage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _FakeTensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, shape, stride)

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (*self.args, False, collections.OrderedDict())


@contextlib.contextmanager
def _fake_torch():
    """Fake ``torch`` modules so pickle emits GLOBAL 'torch._utils _rebuild_tensor_v2' etc."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*a):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in _STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _tensors_of(arrays: dict[str, np.ndarray]) -> tuple[dict, dict[str, _FakeStorage]]:
    """One storage per array; each tensor a (possibly transposed) view of it, like torch."""
    state, storages = collections.OrderedDict(), {}
    for i, (name, a) in enumerate(arrays.items()):
        flat = np.ascontiguousarray(a).reshape(-1)
        storages[str(i)] = s = _FakeStorage(str(i), flat)
        stride = tuple(st // max(a.itemsize, 1) for st in np.ascontiguousarray(a).strides)
        state[name] = _FakeTensor(s, 0, tuple(a.shape), stride)
    return state, storages


def _pickle_with_storages(obj, storages, legacy: bool) -> bytes:
    with _fake_torch() as torch:
        buf = io.BytesIO()
        p = pickle.Pickler(buf, protocol=2)

        def persistent_id(o):
            if isinstance(o, _FakeStorage):
                name = next(k for k, v in DTYPES.items() if v[0] == o.array.dtype)
                pid = ("storage", getattr(torch, _STORAGE_NAMES[name]), o.key, "cpu", o.array.size)
                return pid + (None,) if legacy else pid
            return None

        p.persistent_id = persistent_id
        p.dump(obj)
        return buf.getvalue()


def _save_torch_zip(path, obj, storages, prefix="archive", compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr(f"{prefix}/data.pkl", _pickle_with_storages(obj, storages, legacy=False))
        z.writestr(f"{prefix}/byteorder", "little")
        for key, s in storages.items():
            z.writestr(f"{prefix}/data/{key}", s.array.tobytes())
        z.writestr(f"{prefix}/version", "3\n")


def _save_torch_legacy(path, obj, storages) -> None:
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(_pickle_with_storages(obj, storages, legacy=True))
        keys = list(storages)
        pickle.dump(keys, f, protocol=2)
        for k in keys:
            f.write(struct.pack("<q", storages[k].array.size) + storages[k].array.tobytes())


def _save_torch_zip_deflated(path, obj, storages) -> None:
    """A checkpoint re-zipped by hand with deflate (torch itself stores members)."""
    _save_torch_zip(path, obj, storages, compression=zipfile.ZIP_DEFLATED)


TORCH_SAVERS = {"zip": _save_torch_zip, "legacy": _save_torch_legacy, "zip_deflated": _save_torch_zip_deflated}


@pytest.mark.parametrize("layout", sorted(TORCH_SAVERS))
def test_torch_round_trip_every_dtype(tmp_path, layout):
    arrays = {f"layer.{n}": _array(DTYPES[n][0], (3, 4)) for n in _STORAGE_NAMES}
    arrays["t"] = _array(np.dtype(np.float32), (4, 5)).T  # non-contiguous: stride (1, 5)
    arrays["empty"] = np.zeros((0, 3), np.float32)
    state, storages = _tensors_of(arrays)
    path = tmp_path / "m.pt"
    TORCH_SAVERS[layout](path, {"state_dict": state, "epoch": 3}, storages)
    with open_model(path) as m:
        assert m.format == "torch" and set(m) == set(arrays)
        for k, a in arrays.items():
            got = m[k].numpy()
            assert got.dtype == a.dtype and got.shape == a.shape and not got.flags.writeable
            np.testing.assert_array_equal(got, a)


def test_torch_nested_dicts_flatten_to_dotted_names(tmp_path):
    arrays = {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    state, storages = _tensors_of(arrays)
    obj = {"encoder": {"layers": [state]}, "step": 7, "name": "x"}
    _save_torch_zip(tmp_path / "m.pt", obj, storages, prefix="my_model")
    m = open_model(tmp_path / "m.pt")
    assert sorted(m) == ["encoder.layers.0.b", "encoder.layers.0.w"]
    assert m.metadata == {"step": "7", "name": "x"}


def test_torch_offset_and_shared_storage(tmp_path):
    base = np.arange(20, dtype=np.float32)
    s = _FakeStorage("0", base)
    obj = {"a": _FakeTensor(s, 4, (2, 3), (3, 1)), "b": _FakeTensor(s, 1, (5,), (2,))}
    _save_torch_zip(tmp_path / "m.pt", obj, {"0": s})
    m = open_model(tmp_path / "m.pt")
    np.testing.assert_array_equal(m["a"].numpy(), base[4:10].reshape(2, 3))
    np.testing.assert_array_equal(m["b"].numpy(), base[1:11:2])


@pytest.mark.parametrize("offset, shape, stride", [(18, (3,), (1,)), (0, (5, 5), (5, 1)), (0, (2, 2), (1, 20))])
@pytest.mark.parametrize("layout", sorted(TORCH_SAVERS))
def test_torch_storage_out_of_range(tmp_path, layout, offset, shape, stride):
    s = _FakeStorage("0", np.arange(20, dtype=np.float32))
    TORCH_SAVERS[layout](tmp_path / "m.pt", {"a": _FakeTensor(s, offset, shape, stride)}, {"0": s})
    with pytest.raises(qp.QuantpressError, match="tensor 'a'"):
        open_model(tmp_path / "m.pt")


def test_torch_storage_member_too_short(tmp_path):
    s = _FakeStorage("0", np.arange(20, dtype=np.float32))
    path = tmp_path / "m.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _pickle_with_storages({"a": _FakeTensor(s, 0, (20,), (1,))}, {"0": s}, False))
        z.writestr("archive/data/0", b"\0" * 40)
    with pytest.raises(qp.QuantpressError, match="storage '0'"):
        open_model(path)


def test_torch_deflated_checkpoint_loads_equal_to_the_stored_one(tmp_path):
    arrays = {f"layer.{n}": _array(DTYPES[n][0], (33, 17)) for n in _STORAGE_NAMES}
    arrays["t"] = _array(np.dtype(np.float32), (40, 50)).T
    arrays["zeros"] = np.zeros((300, 300), np.float32)  # compresses ~1000:1, under the bomb ratio
    state, storages = _tensors_of(arrays)
    _save_torch_zip(tmp_path / "stored.pt", {"state_dict": state}, storages)
    with zipfile.ZipFile(tmp_path / "stored.pt") as src, \
            zipfile.ZipFile(tmp_path / "deflated.pt", "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with zipfile.ZipFile(tmp_path / "deflated.pt") as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    assert os.path.getsize(tmp_path / "deflated.pt") < os.path.getsize(tmp_path / "stored.pt") / 4
    with open_model(tmp_path / "stored.pt") as a, open_model(tmp_path / "deflated.pt") as b:
        assert list(a) == list(b) == list(arrays)
        for k in arrays:
            x, y = a[k].numpy(), b[k].numpy()
            assert x.dtype == y.dtype and x.shape == y.shape and x.strides == y.strides and not y.flags.writeable
            assert x.tobytes() == y.tobytes() == arrays[k].tobytes(), k


def _patch_declared(path, member: str, size: int, crc: int) -> None:
    """Rewrites a member's uncompressed size and CRC-32 in its local header and the central directory."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        local = z.getinfo(member).header_offset
    struct.pack_into("<I", raw, local + 14, crc)
    struct.pack_into("<I", raw, local + 22, size)
    pos = raw.find(b"PK\x01\x02")
    while pos >= 0:
        n = struct.unpack_from("<H", raw, pos + 28)[0]
        if raw[pos + 46:pos + 46 + n] == member.encode():
            struct.pack_into("<I", raw, pos + 16, crc)
            struct.pack_into("<I", raw, pos + 24, size)
        pos = raw.find(b"PK\x01\x02", pos + 1)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("declared, message", [
    (80, "inflates past its declared size of 80 bytes"),  # the data holds 120 bytes
    (160, "inflates to 120 bytes, declared 160"),
])
def test_torch_deflated_member_that_lies_about_its_size_is_refused(tmp_path, declared, message):
    s = _FakeStorage("0", np.arange(20, dtype=np.float32))  # the pickle says 20 floats = 80 bytes
    data = np.arange(30, dtype=np.float32).tobytes()           # the member inflates to 120
    path = tmp_path / "liar.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", _pickle_with_storages({"a": _FakeTensor(s, 0, (20,), (1,))}, {"0": s}, False))
        z.writestr("archive/data/0", data)
    # a CRC that matches the first `declared` bytes: zipfile's own reader would accept an 80-byte claim
    _patch_declared(path, "archive/data/0", declared, zlib.crc32(data[:declared]))
    with open_model(path) as m:  # sizes are consistent on their face: the lie shows on inflating
        with pytest.raises(qp.QuantpressError, match=f"liar.pt: zip member 'archive/data/0': {message}"):
            m["a"].numpy()


def test_torch_deflated_member_with_bad_crc_is_refused(tmp_path):
    s = _FakeStorage("0", np.arange(20, dtype=np.float32))
    path = tmp_path / "crc.pt"
    _save_torch_zip(path, {"a": _FakeTensor(s, 0, (20,), (1,))}, {"0": s}, compression=zipfile.ZIP_DEFLATED)
    _patch_declared(path, "archive/data/0", 80, zlib.crc32(b"something else"))
    with open_model(path) as m, pytest.raises(qp.QuantpressError, match="crc.pt: zip member 'archive/data/0': CRC-32"):
        m["a"].numpy()


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("func, label", [(os.system, "os.system|posix.system"), (eval, "(__builtin__|builtins).eval"),
                                         (getattr, "(__builtin__|builtins).getattr")])
@pytest.mark.parametrize("layout", sorted(TORCH_SAVERS))
def test_torch_malicious_pickle_is_refused_without_running(tmp_path, layout, func, label):
    marker = tmp_path / "pwned"
    payload = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w')"
    obj = {"x": _Evil(func, payload)}
    path = tmp_path / "evil.pt"
    TORCH_SAVERS[layout](path, obj, {})
    with pytest.raises(qp.QuantpressError, match=f"refuses to load global ({label})"):
        open_model(path)
    assert not marker.exists()


def test_torch_stack_global_is_refused(tmp_path):
    """Protocol 4's STACK_GLOBAL names its global at run time: find_class must catch it."""
    raw = pickle.dumps(_Evil(os.system, "true"), protocol=4)
    assert b"\x93" in raw  # STACK_GLOBAL
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", raw)
    with pytest.raises(qp.QuantpressError, match="refuses to load global"):
        open_model(path)


def test_torch_huge_memo_index_is_refused(tmp_path):
    raw = b"\x80\x02}r\xff\xff\xff\x7f."  # EMPTY_DICT, LONG_BINPUT 2**31-1, STOP
    path = tmp_path / "memo.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", raw)
    with pytest.raises(qp.QuantpressError, match="memo index"):
        open_model(path)


@FUZZ
@given(data=st.data(), layout=st.sampled_from(sorted(TORCH_SAVERS)))
def test_fuzz_torch(tmp_path, data, layout):
    path = tmp_path / f"f_{layout}.pt"
    if not path.exists():
        arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3, dtype=np.int64)}
        state, storages = _tensors_of(arrays)
        TORCH_SAVERS[layout](path, {"model": state}, storages)
    _fuzz(path, data)
