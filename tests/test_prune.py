"""Pruning (qp.prune, qp.prune_global): exact masks and N:M selections against the NumPy oracle
in quantpress._reference at every SIMD level, storage sizes, round trips, thread invariance
and bad input."""

import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import quantpress as qp
from quantpress import _core, _reference as ref
from quantpress.prune import keep_count
from conftest import weight_like


def bits_of(mask, size):
    return np.unpackbits(mask, bitorder="little")[:size].astype(bool)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.999])
def test_magnitude_mask_matches_oracle(simd, rng, sparsity):
    w = weight_like(rng, (300, 1001))
    s = qp.prune(w, sparsity=sparsity)
    keep = keep_count(w.size, sparsity)
    assert np.array_equal(s.mask, ref.magnitude_mask(w, keep))
    assert s.count == keep == int(np.unpackbits(s.mask).sum())
    kept = bits_of(s.mask, w.size)
    assert np.array_equal(s.values, w.reshape(-1)[kept])
    assert np.array_equal(s.dequantize(), np.where(kept.reshape(w.shape), w, 0))


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.77])
def test_ties_and_zeros(simd, rng, sparsity):
    # Few distinct magnitudes, both signs and signed zeros: the threshold lands on a tie.
    w = rng.choice(np.array([0.0, -0.0, 0.5, -0.5, 1.0, 2.0], np.float32), size=(513, 777))
    keep = keep_count(w.size, sparsity)
    s = qp.prune(w, sparsity=sparsity)
    assert np.array_equal(s.mask, ref.magnitude_mask(w, keep))
    assert s.count == keep


def test_all_zero_and_scores(rng):
    z = np.zeros((10, 17), np.float32)
    s = qp.prune(z, sparsity=0.4)
    assert s.count == keep_count(z.size, 0.4) and np.array_equal(s.mask, ref.magnitude_mask(z, s.count))
    w = weight_like(rng, (64, 128))
    norms = rng.uniform(0.1, 10, 128).astype(np.float32)
    sc = qp.wanda_scores(w, norms)
    assert np.array_equal(sc, np.abs(w) * norms)
    s = qp.prune(w, sparsity=0.5, scores=sc)
    assert np.array_equal(s.mask, ref.magnitude_mask(sc, s.count))
    assert not np.array_equal(s.mask, ref.magnitude_mask(w, s.count))


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 16)])
def test_nm_matches_oracle(simd, rng, n, m):
    w = weight_like(rng, (96, 16 * 33))
    w[::3, ::2] = np.round(w[::3, ::2] * 50) / 50  # ties
    s = qp.prune(w, method="nm", n=n, m=m)
    vals, pos = ref.nm_select(w, w, n, m)
    assert np.array_equal(s.values, vals) and np.array_equal(s.positions, pos)
    d = s.dequantize()
    assert np.array_equal((d != 0).reshape(-1, m).sum(axis=1) <= n, np.ones(w.size // m, bool))
    keep = np.zeros(w.size, bool)
    idx = np.argsort(-(np.abs(w).reshape(-1, m).view(np.uint32).astype(np.int64)), axis=1, kind="stable")[:, :n]
    keep.reshape(-1, m)[np.arange(w.size // m)[:, None], idx] = True
    assert np.array_equal(d, np.where(keep.reshape(w.shape), w, 0))
    assert s.nbytes == w.size // m * n * 4 + s.positions.nbytes
    assert s.positions.nbytes == -(-w.size // m * n * max(2, int(np.ceil(np.log2(m)))) // 8)


@pytest.mark.parametrize("method", ["l1_rows", "l2_rows", "l1_cols", "l2_cols"])
def test_structured(simd, rng, method):
    w = weight_like(rng, (40, 24))
    w[5] = w[6]  # tied rows
    w[:, 3] = w[:, 4]
    s = qp.prune(w, sparsity=0.3, method=method)
    axis = 0 if method.endswith("rows") else 1
    keep = keep_count(w.shape[axis], 0.3)
    want = ref.structured_index(w, method, keep)
    assert np.array_equal(s.index, want)
    d = s.dequantize()
    sel = np.zeros(w.shape[axis], bool)
    sel[want] = True
    expect = np.where(sel[:, None] if axis == 0 else sel[None, :], w, 0)
    assert np.array_equal(d, expect)
    assert s.nbytes == s.values.nbytes + s.index.nbytes
    # Scores rank, w is stored.
    sc = np.abs(w) * rng.uniform(0.1, 10, w.shape[1]).astype(np.float32)
    t = qp.prune(w, sparsity=0.5, method=method, scores=sc)
    assert np.array_equal(t.index, ref.structured_index(sc, method, keep_count(w.shape[axis], 0.5)))


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (7, 33), (1000, 3), (600, 1000), (9, 4099)])
def test_norms_match_oracle(simd, rng, shape):
    w = weight_like(rng, shape)
    ints = np.round(w * 16).astype(np.float32)
    for method in ("l1_rows", "l2_rows", "l1_cols", "l2_cols"):
        p, rows = (1 if method.startswith("l1") else 2), method.endswith("rows")
        # Integer data sums exactly in any order; otherwise the summation orders differ (f64).
        got = _core.prune_norms(ints, shape[1], p, rows)
        assert got.dtype == np.float64 and np.array_equal(got, ref.structured_norms(ints, method))
        got = _core.prune_norms(w, shape[1], p, rows)
        np.testing.assert_allclose(got, ref.structured_norms(w, method), rtol=1e-12, atol=0)


def test_norms_thread_invariance_and_errors(rng):
    w = weight_like(rng, (700, 1500))  # several row blocks
    before = qp.get_num_threads()
    res = []
    try:
        for th in (1, 2, 3):
            qp.set_num_threads(th)
            res.append([_core.prune_norms(w, 1500, p, rows) for p in (1, 2) for rows in (True, False)])
    finally:
        qp.set_num_threads(before)
    for a, b in zip(res[0], res[1] + res[2]):
        assert np.array_equal(a.view(np.uint64), b.view(np.uint64))
    with pytest.raises(qp.QuantpressError):
        _core.prune_norms(w, 0, 1, True)
    with pytest.raises(qp.QuantpressError):
        _core.prune_norms(w, 1499, 1, True)
    with pytest.raises(qp.QuantpressError):
        _core.prune_norms(w, 1500, 3, False)
    x = w.copy()
    x[400, 7] = np.nan
    with pytest.raises(qp.QuantpressError, match=str(400 * 1500 + 7)):
        _core.prune_norms(x, 1500, 2, False)


def test_global_equals_concatenation(simd, rng):
    t = {"a": weight_like(rng, (30, 50)), "b": weight_like(rng, (300, 257)) * 3, "c": weight_like(rng, (7,))}
    out = qp.prune_global(t, sparsity=0.6)
    flat = np.concatenate([v.reshape(-1) for v in t.values()])
    keep = keep_count(flat.size, 0.6)
    want = bits_of(ref.magnitude_mask(flat, keep), flat.size)
    got = np.concatenate([bits_of(s.mask, v.size) for s, v in zip(out.values(), t.values())])
    assert np.array_equal(got, want) and sum(s.count for s in out.values()) == keep
    for k, v in t.items():
        assert np.array_equal(out[k].dequantize(), np.where(bits_of(out[k].mask, v.size).reshape(v.shape), v, 0))


def test_quantized_values_within_bound(rng):
    w = weight_like(rng, (128, 256))
    for method in ("magnitude", "nm"):
        s = qp.prune(w, sparsity=0.5, method=method, quantize=dict(bits=8, group_size=64))
        dense = qp.prune(w, sparsity=0.5, method=method)
        assert isinstance(s.values, qp.QuantizedTensor)
        scales = s.values.scales.astype(np.float32).reshape(-1)
        err = np.abs(s.kept_values() - dense.kept_values())
        bound = np.repeat(scales, 64)[: s.count] / 2 * (1 + 1e-5)
        assert np.all(err <= bound)
        meta = (s.mask, dense.mask) if method == "magnitude" else (s.positions, dense.positions)
        assert np.array_equal(*meta)
        assert np.all(np.abs(s.dequantize() - dense.dequantize()).reshape(-1)[bits_of(dense.mask, w.size) if method == "magnitude" else slice(None)] <= scales.max())
        assert s.nbytes == s.values.nbytes + (s.mask.nbytes if s.mask is not None else s.positions.nbytes)
        assert s.nbytes < dense.nbytes / 3


def test_sizes(rng):
    w = weight_like(rng, (256, 512))
    for sp in (0.5, 0.7):
        s = qp.prune(w, sparsity=sp)
        assert s.nbytes == s.count * 4 + -(-w.size // 8) and s.nbytes < w.nbytes
        assert s.bits_per_weight == pytest.approx(s.nbytes * 8 / w.size)
    h = qp.prune(w, sparsity=0.5, dtype="float16")
    assert h.nbytes == h.count * 2 + w.size // 8
    assert np.array_equal(h.dequantize(), qp.prune(w, 0.5).dequantize().astype(np.float16).astype(np.float32))
    assert qp.prune(w, method="nm").nbytes == w.size // 2 * 4 + w.size // 8


def test_thread_invariance(rng):
    w = weight_like(rng, (1024, 1536))  # several chunks
    w[::7] = np.round(w[::7] * 10) / 10
    t = {"x": w, "y": w[:100] * 2}
    before = qp.get_num_threads()
    res = []
    try:
        for th in (1, 2):
            qp.set_num_threads(th)
            s, nm, g = qp.prune(w, 0.6), qp.prune(w, method="nm", n=4, m=8), qp.prune_global(t, 0.5)
            res.append([s.mask, s.values, nm.values, nm.positions, g["x"].mask, g["y"].mask, s.dequantize()])
    finally:
        qp.set_num_threads(before)
    for a, b in zip(*res):
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


def test_bad_input(rng):
    w = weight_like(rng, (8, 16))
    for sp in (-0.1, 1.0, 1.5, float("nan"), "0.5", True):
        with pytest.raises(qp.QuantpressError):
            qp.prune(w, sparsity=sp)
    for n, m in ((4, 4), (5, 4), (0, 4), (2, 5), (2, 32)):
        with pytest.raises(qp.QuantpressError):
            qp.prune(w, method="nm", n=n, m=m)
    for bad in (np.nan, np.inf, -np.inf):
        x = w.copy()
        x[3, 5] = bad
        for kw in (dict(), dict(method="nm"), dict(method="l2_rows"), dict(scores=np.abs(w)), dict(scores=x)):
            with pytest.raises(qp.QuantpressError):
                qp.prune(x if "scores" not in kw or kw["scores"] is not x else w, **kw)
        with pytest.raises(qp.QuantpressError):
            qp.prune_global({"a": w, "b": x})
    with pytest.raises(qp.QuantpressError):
        qp.prune(w, method="random")
    with pytest.raises(qp.QuantpressError):
        qp.prune(w, scores=np.ones((8, 8), np.float32))
    with pytest.raises(qp.QuantpressError):
        qp.prune(w, method="l1_rows", sparsity=0.5 * np.ones(1)[0] + 0.6)
    with pytest.raises(qp.QuantpressError):
        qp.wanda_scores(w, -np.ones(16))
    with pytest.raises(qp.QuantpressError):
        _core.prune_expand(np.ones(3, np.float32), np.array([0xFF, 0x01], np.uint8), 9)
    with pytest.raises(qp.QuantpressError):  # padding bits set past the end
        _core.prune_compress(np.ones(9, np.float32), np.array([0x0F, 0x03], np.uint8))
    with pytest.raises(qp.QuantpressError):  # positions not increasing
        _core.prune_nm_expand(np.ones(2, np.float32), np.zeros(1, np.uint8), 2, 4, 4)


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 3000),
    sparsity=st.floats(0, 0.999),
    distinct=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_exact_kept_count(size, sparsity, distinct, seed):
    r = np.random.default_rng(seed)
    w = r.choice(r.standard_normal(distinct).astype(np.float32), size=size)
    s = qp.prune(w, sparsity=sparsity)
    assert s.count == keep_count(size, sparsity)
    assert np.array_equal(s.mask, ref.magnitude_mask(w, s.count))
    d = s.dequantize()
    kept = d != 0
    if kept.any() and (~kept & (w != 0)).any():
        assert np.abs(w[kept]).min() >= np.abs(w[~kept]).max()


# --- container and recipes ---------------------------------------------------------------------

SPARSE_CASES = [
    dict(sparsity=0.5),
    dict(sparsity=0.7, dtype="float16"),
    dict(sparsity=0.5, quantize=dict(bits=4, group_size=128)),
    dict(method="nm", n=2, m=4),
    dict(method="nm", n=3, m=8, quantize=dict(bits=8, group_size=64, scheme="symmetric")),
    dict(method="l2_rows", sparsity=0.25),
    dict(method="l1_cols", sparsity=0.5, quantize=dict(bits=4, group_size=32)),
]


@pytest.mark.parametrize("case", SPARSE_CASES)
def test_container_round_trip(tmp_path, rng, case):
    w = weight_like(rng, (48, 200))
    s = qp.prune(w, **case)
    path = str(tmp_path / "m.safetensors")
    qp.save_compressed(path, {"layer.weight": s, "b": np.arange(3, dtype=np.float32)})
    m = qp.load(path)
    assert np.array_equal(m["layer.weight"], s.dequantize())
    assert m.info("layer.weight")["method"] == "sparse"
    assert m.info("layer.weight")["nbytes"] == s.nbytes
    e = m.entry("layer.weight")
    assert (e.format, e.count, e.n, e.m, e.axis, e.shape) == (s.format, s.count, s.n, s.m, s.axis, s.shape)
    assert np.array_equal(qp.load(path, lazy=False)["layer.weight"], s.dequantize())


def _rewrite(path, change):
    """Rewrites a container with its header passed through ``change(header, records)``."""
    import json
    import struct
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    recs = json.loads(head["__metadata__"]["quantpress.tensors"])
    change(head, recs)
    head["__metadata__"]["quantpress.tensors"] = json.dumps(recs)
    h = json.dumps(head).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + raw[8 + n:])


@pytest.mark.parametrize("case,change", [
    (dict(sparsity=0.5), lambda h, r: r["w"]["params"].update(count=r["w"]["params"]["count"] + 1)),
    (dict(sparsity=0.5), lambda h, r: r["w"]["params"].update(format="csr")),
    (dict(sparsity=0.5), lambda h, r: r["w"]["params"].update(values="float16")),
    (dict(method="nm", n=2, m=4), lambda h, r: r["w"]["params"].update(n=3)),
    (dict(method="nm", n=2, m=4), lambda h, r: r["w"].update(shape=[40, 30])),
    (dict(method="l2_rows", sparsity=0.5), lambda h, r: r["w"]["params"].update(axis=1)),
    (dict(sparsity=0.5, quantize=dict(bits=4, group_size=64)), lambda h, r: r["w"]["params"]["quant"].update(length=64)),
    (dict(sparsity=0.5), lambda h, r: h.update({"w.stray": h["w.values"]})),
])
def test_container_refuses_bad_sparse_records(tmp_path, rng, case, change):
    s = qp.prune(weight_like(rng, (40, 32)), **case)
    path = str(tmp_path / "m.safetensors")
    qp.save_compressed(path, {"w": s})
    _rewrite(path, change)
    with pytest.raises(qp.QuantpressError):
        m = qp.load(path)
        m["w"]


def test_corrupt_nm_positions_refused_on_decode(tmp_path, rng):
    s = qp.prune(weight_like(rng, (8, 16)), method="nm", n=2, m=4)
    path = str(tmp_path / "m.safetensors")
    qp.save_compressed(path, {"w": s})
    raw = bytearray(open(path, "rb").read())
    idx = len(raw) - s.values.nbytes - len(s.positions)  # group 0: positions (0, 0)
    raw[idx] = 0
    open(path, "wb").write(bytes(raw))
    with pytest.raises(qp.QuantpressError):
        qp.load(path)["w"]


def _synthetic_model(tmp_path, rng):
    from safetensors.numpy import save_file
    t = {f"model.layers.{i}.mlp.up_proj.weight": weight_like(rng, (128, 256)) for i in range(3)}
    t["model.embed_tokens.weight"] = weight_like(rng, (64, 256))
    t["model.norm.weight"] = np.ones(256, np.float32)
    src = str(tmp_path / "src.safetensors")
    save_file(t, src)
    return src, t


@pytest.mark.parametrize("recipe", ["prune50-int4", "nm24-int8"])
def test_sparse_recipes(tmp_path, rng, recipe):
    src, t = _synthetic_model(tmp_path, rng)
    dst, dst4 = str(tmp_path / "out.safetensors"), str(tmp_path / "int4.safetensors")
    qp.compress(src, dst, recipe=recipe)
    qp.compress(src, dst4, recipe="int4")
    m = qp.load(dst)
    up = "model.layers.1.mlp.up_proj.weight"
    assert m.info(up)["method"] == "sparse"
    assert m.info("model.embed_tokens.weight")["method"] == "scalar"  # head/embedding rule
    assert m.info("model.norm.weight")["method"] == "none"  # skipped
    got = m[up]
    e = m.entry(up)
    assert np.array_equal(got, e.dequantize())
    assert e.density == 0.5 and np.count_nonzero(got) <= t[up].size // 2
    if recipe == "prune50-int4":
        assert os.path.getsize(dst) < os.path.getsize(dst4)
        # The kept positions are exactly the magnitude mask of the original.
        assert np.array_equal(e.mask, ref.magnitude_mask(t[up], t[up].size // 2))
    rel = np.linalg.norm(got - t[up]) / np.linalg.norm(t[up])
    assert rel < 0.8
