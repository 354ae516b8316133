"""ProductQuantizer and ResidualQuantizer against NumPy brute force (quantpress._reference).

Tolerances: codes come from ``qp.assign`` (float32 distances), the oracle uses float64, so they
must agree wherever the oracle's best codeword is unambiguous (gap above 1e-4 relative) and, on
near ties, the chosen codeword must be within 1e-5 relative of the best. ADC distances are a
float32 sum of table entries in sub-space order, the brute force a float64 sum over dimensions:
1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quantpress as qp
from quantpress import _reference as ref
from quantpress import pq as pq_mod
from conftest import weight_like


def _data(rng, n, d, clusters=0):
    x = rng.standard_normal((n, d)).astype(np.float32)
    if clusters:
        x += 3 * rng.standard_normal((clusters, d)).astype(np.float32)[rng.integers(0, clusters, n)]
    return x


def _sub_dists(x, codebooks):
    m, _k, ds = codebooks.shape
    return [((x[:, j * ds:(j + 1) * ds, None].astype(np.float64).transpose(0, 2, 1)
              - codebooks[j][None].astype(np.float64)) ** 2).sum(-1) for j in range(m)]


def _assert_nearest(codes, x, codebooks):
    """codes are the oracle's nearest codewords (exactly where unambiguous)."""
    want = ref.pq_encode(x, codebooks)
    for j, dist in enumerate(_sub_dists(x, codebooks)):
        srt = np.sort(dist, axis=1)
        clear = srt[:, 1] - srt[:, 0] > 1e-4 * np.maximum(srt[:, 0], 1e-12)
        assert np.array_equal(codes[clear, j], want[clear, j])
        chosen = dist[np.arange(len(x)), codes[:, j].astype(np.int64)]
        assert np.all(chosen <= srt[:, 0] * (1 + 1e-5) + 1e-9)


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(7)
    x = _data(rng, 3000, 32, clusters=20)
    return qp.ProductQuantizer(m=8, bits=6, n_iter=10).train(x), x


def test_encode_is_nearest_codeword_per_subspace_and_decode_concatenates(trained):
    pq, x = trained
    assert pq.codebooks.shape == (8, 64, 4) and pq.codebooks.dtype == np.float32
    codes = pq.encode(x)
    assert codes.shape == (3000, 8) and codes.dtype == np.uint8
    _assert_nearest(codes, x, pq.codebooks)
    assert np.array_equal(pq.decode(codes), ref.pq_decode(codes, pq.codebooks))


def test_encode_streams_in_batches_with_identical_result(trained, monkeypatch):
    pq, x = trained
    whole = pq.encode(x)
    monkeypatch.setattr(pq_mod, "ENCODE_BATCH", 7)
    assert np.array_equal(pq.encode(x), whole)
    assert np.array_equal(pq.encode(x.astype(np.float64)), whole)


def test_adc_search_matches_brute_force_over_decoded_vectors(trained):
    pq, x = trained
    codes = pq.encode(x)
    q = _data(np.random.default_rng(1), 40, 32, clusters=20)
    dist, idx = pq.search(q, codes, k=10)
    assert dist.dtype == np.float32 and idx.dtype == np.int64 and dist.shape == idx.shape == (40, 10)
    want_d, want_i = ref.knn_brute(q, pq.decode(codes), 10)
    np.testing.assert_allclose(dist, want_d, rtol=1e-4)
    # Same neighbours, except where the brute-force distances tie within the float32 tolerance.
    assert np.mean(idx == want_i) > 0.99
    full = ((q[:, None, :].astype(np.float64) - pq.decode(codes)[None]) ** 2).sum(-1)
    np.testing.assert_allclose(np.take_along_axis(full, idx, 1), dist, rtol=1e-4)
    assert np.all(np.diff(dist, axis=1) >= 0)


def test_search_blocks_and_ties_go_to_the_lower_index(trained, monkeypatch):
    pq, x = trained
    codes = pq.encode(x[:50])
    dup = np.concatenate([codes] * 4)  # every vector four times: equal distances
    q = x[100:105]
    whole = pq.search(q, dup, k=12)
    for d_i, i_i in zip(*whole):
        assert np.all(np.diff(d_i) >= 0)
        tie = d_i[:-1] == d_i[1:]
        assert tie.any() and np.all(i_i[:-1][tie] < i_i[1:][tie])  # equal distances: ascending index
    monkeypatch.setattr(pq_mod, "_SEARCH_ELEMS", 64)  # tiny query and database blocks
    small = pq.search(q, dup, k=12)
    assert np.array_equal(small[1], whole[1]) and np.array_equal(small[0], whole[0])
    tables = pq.distance_tables(q)
    want = sum(tables[:, j][:, dup[:, j]] for j in range(8))
    exp_i = np.argsort(want, axis=1, kind="stable")[:, :12]
    assert np.array_equal(whole[1], exp_i)


def test_distance_tables_are_squared_distances_to_codewords(trained):
    pq, x = trained
    t = pq.distance_tables(x[:5])
    assert t.shape == (5, 8, 64)
    want = np.stack(_sub_dists(x[:5], pq.codebooks), axis=1)
    np.testing.assert_allclose(t, want, rtol=1e-5, atol=1e-6)


def test_more_bits_lower_error_and_uint16_codes():
    rng = np.random.default_rng(3)
    x = _data(rng, 1200, 16)
    errs = []
    for bits in (2, 4, 6):
        pq = qp.ProductQuantizer(m=4, bits=bits, n_iter=8).train(x)
        errs.append(float(((pq.decode(pq.encode(x)) - x) ** 2).mean()))
    assert errs[0] > errs[1] > errs[2]
    pq = qp.ProductQuantizer(m=2, bits=9, n_iter=3).train(x[:, :4])
    codes = pq.encode(x[:, :4])
    assert codes.dtype == np.uint16 and int(codes.max()) >= 256
    _assert_nearest(codes, x[:, :4], pq.codebooks)


def test_residual_stages_reduce_error_and_match_greedy_oracle():
    rng = np.random.default_rng(5)
    x = _data(rng, 1500, 8, clusters=10)
    rq = qp.ResidualQuantizer(stages=3, bits=5, n_iter=10).train(x)
    codes = rq.encode(x)
    assert codes.shape == (1500, 3) and codes.dtype == np.uint8
    errs = [float(((rq.decode(codes, stages=s) - x) ** 2).mean()) for s in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2]
    # Greedy encoding: stage s's code is the nearest codeword to the residual of stages < s.
    r = x.copy()
    for s in range(3):
        _assert_nearest(codes[:, s:s + 1], r, rq.codebooks[s][None])
        r = r - rq.codebooks[s][codes[:, s]]
    want = rq.codebooks[0][codes[:, 0]] + rq.codebooks[1][codes[:, 1]] + rq.codebooks[2][codes[:, 2]]
    np.testing.assert_array_equal(rq.decode(codes), want)  # added in stage order: exact
    more = qp.ResidualQuantizer(stages=1, bits=5, n_iter=10).train(x)
    assert errs[0] == pytest.approx(float(((more.decode(more.encode(x)) - x) ** 2).mean()), rel=1e-6)


def test_save_load_round_trip(trained, tmp_path):
    pq, x = trained
    pq.save(tmp_path / "pq.safetensors")
    back = qp.ProductQuantizer.load(tmp_path / "pq.safetensors")
    assert (back.m, back.bits, back.n_iter, back.seed) == (pq.m, pq.bits, pq.n_iter, pq.seed)
    assert np.array_equal(back.encode(x), pq.encode(x))
    rq = qp.ResidualQuantizer(stages=2, bits=3, n_iter=3).train(x)
    rq.save(tmp_path / "rq.safetensors")
    rback = qp.ResidualQuantizer.load(tmp_path / "rq.safetensors")
    assert np.array_equal(rback.encode(x), rq.encode(x))
    with pytest.raises(qp.QuantpressError, match="not a ProductQuantizer"):
        qp.ProductQuantizer.load(tmp_path / "rq.safetensors")


def test_bad_input(trained):
    pq, x = trained
    err = qp.QuantpressError
    with pytest.raises(err, match="divisible"):
        qp.ProductQuantizer(m=3, bits=2).train(x)
    for bits in (0, 17, 2.0, True):
        with pytest.raises(err, match="bits"):
            qp.ProductQuantizer(m=2, bits=bits)
    with pytest.raises(err, match="at least"):
        qp.ProductQuantizer(m=2, bits=8).train(x[:100])
    bad = x[:300].copy()
    bad[3, 4] = np.nan
    with pytest.raises(err, match="NaN"):
        qp.ProductQuantizer(m=2, bits=2).train(bad)
    with pytest.raises(err, match="non-finite"):
        pq.encode(bad[:, :32])
    with pytest.raises(err, match="NaN"):
        pq.search(bad[2:5, :32], pq.encode(x[:20]), k=2)
    with pytest.raises(err, match="empty"):
        pq.encode(np.zeros((0, 32), np.float32))
    with pytest.raises(err, match="float32"):
        pq.encode(x.astype(np.int32))
    with pytest.raises(err, match="d=32"):
        pq.encode(x[:, :16])
    with pytest.raises(err, match=r"\[0, 64\)"):
        pq.decode(np.full((2, 8), 64, np.uint8))
    with pytest.raises(err, match=r"\[0, 64\)"):
        pq.decode(np.full((2, 8), -1, np.int32))
    with pytest.raises(err, match="integer"):
        pq.decode(np.zeros((2, 8), np.float32))
    with pytest.raises(err, match="shape"):
        pq.decode(np.zeros((2, 7), np.uint8))
    with pytest.raises(err, match="larger than"):
        pq.search(x[:2], pq.encode(x[:5]), k=6)
    with pytest.raises(err, match="not trained"):
        qp.ProductQuantizer(m=2).encode(x)
    with pytest.raises(err, match="not trained"):
        qp.ResidualQuantizer(stages=2).decode(np.zeros((1, 2), np.uint8))
    with pytest.raises(err, match="stages"):
        qp.ResidualQuantizer(stages=0)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(4, 40), m=st.integers(1, 3), ds=st.integers(1, 4), bits=st.integers(1, 2),
       k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_property_small_shapes(n, m, ds, bits, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, (n, m * ds)).astype(np.float32)  # small integers: many ties
    pq = qp.ProductQuantizer(m=m, bits=bits, n_iter=3, seed=seed).train(x)
    codes = pq.encode(x)
    _assert_nearest(codes, x, pq.codebooks)
    k = min(k, n)
    dist, idx = pq.search(x[:3], codes, k=k)
    want_d, want_i = ref.knn_brute(x[:3], pq.decode(codes), k)
    np.testing.assert_allclose(dist, want_d, rtol=1e-4, atol=1e-5)
    full = ((x[:3, None, :].astype(np.float64) - pq.decode(codes)[None]) ** 2).sum(-1)
    np.testing.assert_allclose(np.take_along_axis(full, idx, 1), dist, rtol=1e-4, atol=1e-5)
    assert all(len(set(row)) == k for row in idx.tolist())
    assert np.all(np.diff(dist, axis=1) >= 0)


# --- ADC scan (Rust) and OPQ -------------------------------------------------------------------


def test_adc_search_is_bit_exact_against_the_oracle_and_thread_independent(trained):
    pq, x = trained
    codes = pq.encode(x)
    q = _data(np.random.default_rng(2), 21, 32, clusters=20)
    want_d, want_i = ref.adc_search(pq.distance_tables(q), codes, 17)
    before = qp.get_num_threads()
    try:
        for threads in (1, 3):
            qp.set_num_threads(threads)
            dist, idx = pq.search(q, codes, k=17)
            assert np.array_equal(dist.view(np.uint32), want_d.view(np.uint32))
            assert np.array_equal(idx, want_i)
    finally:
        qp.set_num_threads(before)


@pytest.mark.parametrize("dtype,ksub", [(np.uint8, 256), (np.uint8, 5), (np.uint16, 700)])
def test_adc_kernel_u8_u16_ties_and_large_database(dtype, ksub):
    rng = np.random.default_rng(ksub)
    nq, m, n, k = 3, 6, 40_000, 50  # few queries over many rows: the scan splits the database
    tables = rng.integers(0, 4, (nq, m, ksub)).astype(np.float32)  # integer sums: many ties
    codes = rng.integers(0, ksub, (n, m)).astype(dtype)
    d, i = qp._core.pq_adc_search(tables.ravel(), nq, m, ksub, codes.ravel(), k)
    want_d, want_i = ref.adc_search(tables, codes, k)
    assert np.array_equal(d.reshape(nq, k), want_d) and np.array_equal(i.reshape(nq, k), want_i)
    with pytest.raises(qp.QuantpressError, match="codes must lie"):
        qp._core.pq_adc_search(tables[:, :, :-1].copy().ravel(), nq, m, ksub - 1, codes.ravel(), k)


def test_adc_kernel_bad_input():
    t = np.ones((2, 3, 4), np.float32)
    c = np.zeros((5, 3), np.uint8)
    err = qp.QuantpressError
    with pytest.raises(err, match="uint8 or uint16"):
        qp._core.pq_adc_search(t.ravel(), 2, 3, 4, c.astype(np.int32).ravel(), 1)
    with pytest.raises(err, match="between 1 and"):
        qp._core.pq_adc_search(t.ravel(), 2, 3, 4, c.ravel(), 6)
    with pytest.raises(err, match="nq\\*m\\*ksub"):
        qp._core.pq_adc_search(t.ravel()[1:], 2, 3, 4, c.ravel(), 1)
    bad = t.copy()
    bad[1, 2, 3] = np.inf
    with pytest.raises(err, match="non-finite"):
        qp._core.pq_adc_search(bad.ravel(), 2, 3, 4, c.ravel(), 1)
    with pytest.raises(err, match="overflow"):
        qp._core.pq_adc_search((t * 1e38).ravel(), 2, 3, 4, c.ravel(), 1)


def _correlated(rng, n, d):
    z = rng.standard_normal((n, d)).astype(np.float32)
    return z @ rng.standard_normal((d, d)).astype(np.float32)


def test_opq_rotation_is_orthogonal_and_beats_plain_pq_on_correlated_data():
    rng = np.random.default_rng(4)
    x = _correlated(rng, 3000, 32)
    plain = qp.ProductQuantizer(m=8, bits=5, n_iter=10).train(x)
    opq = qp.ProductQuantizer(m=8, bits=5, n_iter=10, opq=True, opq_iter=6).train(x)
    assert plain.rotation is None and opq.rotation.shape == (32, 32) and opq.rotation.dtype == np.float32
    np.testing.assert_allclose(opq.rotation @ opq.rotation.T, np.eye(32), atol=1e-5)
    err = lambda q: float(((q.decode(q.encode(x)) - x) ** 2).mean())  # noqa: E731
    assert err(opq) <= err(plain)  # measured: about 0.68x on this data
    # encode = nearest codewords of x @ R; decode = codewords concatenated, rotated back.
    codes = opq.encode(x)
    xr = x @ opq.rotation
    _assert_nearest(codes, xr, opq.codebooks)
    np.testing.assert_array_equal(opq.decode(codes), ref.pq_decode(codes, opq.codebooks) @ opq.rotation.T)
    # ADC search uses rotated queries; distances are those to the decoded vectors.
    q = x[:7]
    np.testing.assert_allclose(opq.distance_tables(q), np.stack(_sub_dists(q @ opq.rotation, opq.codebooks), 1),
                               rtol=1e-4, atol=1e-4)
    dist, idx = opq.search(q, codes, k=5)
    want_d, want_i = ref.adc_search(opq.distance_tables(q), codes, 5)
    assert np.array_equal(dist, want_d) and np.array_equal(idx, want_i)
    full = ((q[:, None, :].astype(np.float64) - opq.decode(codes)[None]) ** 2).sum(-1)
    np.testing.assert_allclose(np.take_along_axis(full, idx, 1), dist, rtol=1e-3)


def test_opq_save_load_and_bad_input(tmp_path):
    rng = np.random.default_rng(6)
    x = _correlated(rng, 600, 8)
    opq = qp.ProductQuantizer(m=2, bits=3, n_iter=3, opq=True, opq_iter=2).train(x)
    opq.save(tmp_path / "opq.safetensors")
    back = qp.ProductQuantizer.load(tmp_path / "opq.safetensors")
    assert back.opq and back.opq_iter == 2 and np.array_equal(back.rotation, opq.rotation)
    assert np.array_equal(back.encode(x), opq.encode(x))
    assert "opq=True" in repr(back)
    with pytest.raises(qp.QuantpressError, match="opq"):
        qp.ProductQuantizer(m=2, opq="yes")
    with pytest.raises(qp.QuantpressError, match="opq_iter"):
        qp.ProductQuantizer(m=2, opq=True, opq_iter=0)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(qp.QuantpressError, match="NaN"):
        opq.encode(bad)


def _rq_errors(rq, x, codes):
    return ((x.astype(np.float64) - rq.codebooks.astype(np.float64)[np.arange(rq.stages), codes.astype(np.int64)].sum(1)) ** 2).sum(1)


def test_rvq_beam_beats_greedy_and_exhaustive_beam_is_optimal(monkeypatch):
    import itertools

    rng = np.random.default_rng(8)
    x = _data(rng, 800, 6, clusters=6)
    rq = qp.ResidualQuantizer(stages=3, bits=2, n_iter=5).train(x)
    greedy = rq.encode(x)
    rq.beam = 4
    beam4 = rq.encode(x)
    assert beam4.dtype == np.uint8 and beam4.shape == (800, 3)
    e_greedy, e_beam = _rq_errors(rq, x, greedy), _rq_errors(rq, x, beam4)
    assert e_beam.mean() < e_greedy.mean()
    # Exhaustive: beam >= 4**2 keeps every stage-1 prefix, so every one of the 64 codes is scored.
    rq.beam = 16
    full = rq.encode(x)
    combos = np.array(list(itertools.product(range(4), repeat=3)))
    cbs = rq.codebooks.astype(np.float64)
    recon = cbs[0][combos[:, 0]] + cbs[1][combos[:, 1]] + cbs[2][combos[:, 2]]
    best = ((x.astype(np.float64)[:, None] - recon[None]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(_rq_errors(rq, x, full), best, rtol=1e-9, atol=1e-12)
    assert np.all(_rq_errors(rq, x, full) <= e_beam + 1e-9)
    # Batching does not change the result.
    monkeypatch.setattr(pq_mod, "_BEAM_ELEMS", 100)
    assert np.array_equal(rq.encode(x), full)


def test_rvq_beam_save_load_and_bad_input(tmp_path):
    x = _data(np.random.default_rng(9), 300, 4)
    rq = qp.ResidualQuantizer(stages=2, bits=3, n_iter=3, beam=5).train(x)
    rq.save(tmp_path / "rq.safetensors")
    back = qp.ResidualQuantizer.load(tmp_path / "rq.safetensors")
    assert back.beam == 5 and np.array_equal(back.encode(x), rq.encode(x))
    assert "beam=5" in repr(back)
    with pytest.raises(qp.QuantpressError, match="beam"):
        qp.ResidualQuantizer(stages=2, beam=0)
    bad = x.copy()
    bad[1, 1] = np.inf
    with pytest.raises(qp.QuantpressError, match="NaN"):
        rq.encode(bad)


def _refit_oracle(x, cb, codes):
    """The refinement's codebook update written out: stage by stage, each used codeword the
    float64 mean of what the other (already refitted) stages leave of its vectors."""
    cb = cb.astype(np.float64).copy()
    x = x.astype(np.float64)
    for s in range(len(cb)):
        rest = sum(cb[t][codes[:, t]] for t in range(len(cb)) if t != s)
        for j in range(cb.shape[1]):
            rows = codes[:, s] == j
            if rows.any():
                cb[s][j] = np.float32((x[rows] - (rest[rows] if np.ndim(rest) else 0)).mean(0))
    return cb.astype(np.float32)


@pytest.mark.parametrize("beam", [1, 4])
def test_rvq_refinement_never_raises_the_training_error(beam, monkeypatch):
    rng = np.random.default_rng(10)
    x = _data(rng, 1500, 6, clusters=5)
    plain = qp.ResidualQuantizer(stages=3, bits=3, n_iter=4, beam=beam).train(x)
    rq = qp.ResidualQuantizer(stages=3, bits=3, n_iter=4, beam=beam, refine=3).train(x)
    assert len(plain.train_errors) == 1 and len(rq.train_errors) == 4
    assert rq.train_errors[0] == plain.train_errors[0]  # the same greedy stages first
    e = np.array(rq.train_errors)
    # Each step is optimal for what it changes, up to storing the codebooks in float32.
    assert np.all(e[1:] <= e[:-1] * (1 + 1e-6)), e
    assert e[-1] < 0.99 * e[0]
    # The codes the quantizer gives now beat the unrefined quantizer's on the training data.
    assert _rq_errors(rq, x, rq.encode(x)).mean() < _rq_errors(plain, x, plain.encode(x)).mean()
    # One round by hand: codes from the encoder where better than the greedy ones, then the
    # least-squares refit of every stage in order.
    one = qp.ResidualQuantizer(stages=3, bits=3, n_iter=4, beam=beam, refine=1).train(x)
    greedy_codes = np.empty((len(x), 3), np.int64)
    r = x.astype(np.float32).copy()
    for s in range(3):
        greedy_codes[:, s] = qp.assign(r, plain.codebooks[s])
        r -= plain.codebooks[s][greedy_codes[:, s]]
    new = plain.encode(x).astype(np.int64)
    codes = np.where((_rq_errors(plain, x, new) < _rq_errors(plain, x, greedy_codes))[:, None], new, greedy_codes)
    np.testing.assert_allclose(one.codebooks, _refit_oracle(x, plain.codebooks, codes), rtol=1e-5, atol=1e-6)


def test_rvq_refine_save_load_and_bad_input(tmp_path):
    x = _data(np.random.default_rng(11), 300, 4)
    rq = qp.ResidualQuantizer(stages=2, bits=3, n_iter=3, beam=2, refine=2).train(x)
    rq.save(tmp_path / "rq.safetensors")
    back = qp.ResidualQuantizer.load(tmp_path / "rq.safetensors")
    assert back.refine == 2 and np.array_equal(back.codebooks, rq.codebooks)
    assert "refine=2" in repr(back)
    with pytest.raises(qp.QuantpressError, match="refine"):
        qp.ResidualQuantizer(stages=2, refine=-1)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 40), st.integers(0, 10**6), st.booleans())
def test_smallest_is_the_stable_argsort_prefix(rows, cols, seed, ties):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 3, (rows, cols)).astype(np.float64) if ties else rng.standard_normal((rows, cols))
    keep = int(rng.integers(1, cols + 1))
    assert np.array_equal(pq_mod._smallest(v, keep), np.argsort(v, axis=1, kind="stable")[:, :keep])


# --- vq_quantize ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wl():
    return weight_like(np.random.default_rng(11), (256, 512))


def test_vq_bits_per_weight_counts_every_byte(wl):
    vq = qp.vq_quantize(wl, dim=4, bits_per_weight=2)
    n = wl.size
    assert vq.codes.shape == (n // 4, 1) and vq.codes.dtype == np.uint8
    assert vq.codebooks.shape == (1, 256, 4) and vq.codebooks.dtype == np.float16
    assert vq.scales.shape == (256,) and vq.scales.dtype == np.float16
    assert vq.bits_per_weight == (n // 4 * 1 + 256 * 4 * 2 + 256 * 2) * 8 / n
    vq2 = qp.vq_quantize(wl, dim=8, bits_per_weight=2, residual_stages=2, row_scale=False)
    assert vq2.scales is None and vq2.codes.shape == (n // 8, 2)
    assert vq2.bits_per_weight == (n // 8 * 2 + 2 * 256 * 8 * 2) * 8 / n


def test_vq_codes_are_nearest_and_dequantize_is_scaled_codeword_sum(wl):
    vq = qp.vq_quantize(wl, dim=4, bits_per_weight=4, residual_stages=2, n_iter=5)
    s = vq.scales.astype(np.float32)
    r = (wl / s[:, None]).reshape(-1, 4)
    want = np.zeros_like(r)
    for st in range(2):
        cb = vq.codebooks[st].astype(np.float32)
        _assert_nearest(vq.codes[:, st:st + 1], r, cb[None])
        r = r - cb[vq.codes[:, st]]
        want += cb[vq.codes[:, st]]
    np.testing.assert_array_equal(vq.dequantize(), (want.reshape(wl.shape) * s[:, None]))
    assert np.allclose(s, np.sqrt((wl.astype(np.float64) ** 2).mean(1)), rtol=1e-3)


def test_vq_beats_2bit_rtn_at_fewer_bits(wl):
    vq = qp.vq_quantize(wl, dim=4, bits_per_weight=2)
    rtn = qp.quantize(wl, bits=2, group_size=64)
    assert vq.bits_per_weight < rtn.bits_per_weight
    err_vq = float(((vq.dequantize() - wl) ** 2).mean())
    err_rtn = float(((rtn.dequantize() - wl) ** 2).mean())
    assert err_vq < 0.5 * err_rtn  # measured: about 4x lower on this data


def test_vq_importance_weights_lower_error_where_they_point(wl):
    imp = np.ones(wl.shape[1], np.float32)
    imp[:64] = 100.0
    plain = qp.vq_quantize(wl, dim=4, bits_per_weight=1.5, n_iter=8)
    weighted = qp.vq_quantize(wl, dim=4, bits_per_weight=1.5, n_iter=8, weights=imp)
    err = lambda v: float(((v.dequantize() - wl)[:, :64] ** 2).mean())  # noqa: E731
    assert err(weighted) < err(plain)
    full = np.broadcast_to(imp, wl.shape)
    same = qp.vq_quantize(wl, dim=4, bits_per_weight=1.5, n_iter=8, weights=full)
    assert np.array_equal(same.codes, weighted.codes)


def test_vq_bad_input(wl):
    err = qp.QuantpressError
    with pytest.raises(err, match="divisible by dim"):
        qp.vq_quantize(wl[:, :510], dim=4)
    with pytest.raises(err, match="2\\*\\*16"):
        qp.vq_quantize(wl, dim=8, bits_per_weight=3)
    with pytest.raises(err, match="integer"):
        qp.vq_quantize(wl, dim=3, bits_per_weight=1.5, residual_stages=2)
    with pytest.raises(err, match="cannot train"):
        qp.vq_quantize(wl[:4, :64], dim=4, bits_per_weight=2)
    bad = wl.copy()
    bad[1, 2] = np.inf
    with pytest.raises(err, match="NaN"):
        qp.vq_quantize(bad, dim=4)
    with pytest.raises(err, match="float32"):
        qp.vq_quantize(wl.astype(np.int64), dim=4)
    with pytest.raises(err, match="non-negative"):
        qp.vq_quantize(wl, dim=4, bits_per_weight=2, weights=-np.ones(512))
    with pytest.raises(err, match="shape"):
        qp.vq_quantize(wl, dim=4, bits_per_weight=2, weights=np.ones(7))
