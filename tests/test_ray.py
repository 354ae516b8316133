"""The Ray executor (quantpress/executor.py) and sharded / distributed k-means
(quantpress/kmeans_shards.py) on a local 2-CPU Ray instance: outputs byte-identical to the
local run, a killed worker retried with the same result, centroids equal bit for bit."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

import quantpress as qp
from quantpress import _core, executor
from quantpress.cli import main as cli_main
from quantpress.sharded_container import ShardedWriter


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(0)
    tensors = {f"layers.{i}.weight": rng.standard_normal((64, 256)).astype(np.float32 if i % 2 else np.float16)
               for i in range(6)}
    tensors.update({f"layers.{i}.bias": rng.standard_normal(64).astype(np.float32) for i in range(6)})
    tensors["embed.weight"] = rng.standard_normal((128, 256)).astype(np.float32)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_file(tensors, str(path))
    return str(path)


@pytest.fixture
def small_units(monkeypatch):
    monkeypatch.setattr(executor, "UNIT_BYTES", 40_000)  # several tasks per model


def _files(path):
    if os.path.isfile(path):
        return {"": open(path, "rb").read()}
    return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))}


def _rows(report):
    return [(t.name, t.method, t.output_bytes, t.rel_error, t.sqnr_db) for t in report.tensors]


@pytest.mark.parametrize("recipe", ["int4", "q4_k"])
def test_single_file_is_byte_identical(ray_local, model, tmp_path, small_units, recipe):
    local = qp.compress(model, tmp_path / "local.safetensors", recipe)
    seen = []
    dist = qp.compress(model, tmp_path / "ray.safetensors", recipe, executor="ray",
                       progress=lambda d, t, n: seen.append((d, t, n)))
    assert _files(str(tmp_path / "ray.safetensors")) == _files(str(tmp_path / "local.safetensors"))
    assert _rows(dist) == _rows(local)
    assert [s[:2] for s in seen] == [(i + 1, len(local.tensors)) for i in range(len(local.tensors))]
    assert [s[2] for s in seen] == [t.name for t in local.tensors]


#: Row pruning: its stored size depends on the data, so its shard's writer writes the entries the
#: tasks return; every other recipe here has tasks writing their data at planned offsets.
ROWS = {"default": {"method": "sparse", "prune": "l2_rows", "sparsity": 0.25, "bits": 8, "group_size": 64}}


@pytest.mark.parametrize("recipe", ["int4", "q4_k", "vq2", "prune50-int4", ROWS])
def test_sharded_output_is_written_by_the_workers_and_byte_identical(ray_local, model, tmp_path, monkeypatch, recipe):
    local_rep = qp.compress(model, tmp_path / "local", recipe, max_shard_size=20_000)
    local = _files(str(tmp_path / "local"))
    assert len([n for n in local if n.endswith(".safetensors")]) > 2

    def driver_writes(*a, **k):
        raise AssertionError("the driver wrote a tensor")

    monkeypatch.setattr(ShardedWriter, "add", driver_writes)  # the Ray workers are other processes
    seen = []
    rep = qp.compress(model, tmp_path / "ray", recipe, max_shard_size=20_000, executor="ray",
                      progress=lambda d, t, n: seen.append((d, t, n)))
    assert _files(str(tmp_path / "ray")) == local
    assert _rows(rep) == _rows(local_rep)
    assert [s[:2] for s in seen] == [(i + 1, len(rep.tensors)) for i in range(len(rep.tensors))]
    assert sorted(s[2] for s in seen) == sorted(t.name for t in rep.tensors)


def test_a_killed_worker_is_retried_and_the_output_is_the_same(ray_local, model, tmp_path, small_units):
    qp.compress(model, tmp_path / "local", "int4", max_shard_size=20_000)
    marker = tmp_path / "crashed"
    qp.compress(model, tmp_path / "ray", "int4", max_shard_size=20_000, executor="ray", _fault_marker=str(marker))
    assert marker.exists()  # a worker did die mid-task
    assert _files(str(tmp_path / "ray")) == _files(str(tmp_path / "local"))
    qp.compress(model, tmp_path / "local-rows", ROWS, max_shard_size=20_000)
    marker.unlink()
    qp.compress(model, tmp_path / "ray-rows", ROWS, max_shard_size=20_000, executor="ray", _fault_marker=str(marker))
    assert marker.exists()
    assert _files(str(tmp_path / "ray-rows")) == _files(str(tmp_path / "local-rows"))


def test_cli_executor_ray(ray_local, model, tmp_path):
    assert cli_main(["compress", model, "-o", str(tmp_path / "a.safetensors"), "--recipe", "int8"]) == 0
    assert cli_main(["compress", model, "-o", str(tmp_path / "b.safetensors"), "--recipe", "int8",
                     "--executor", "ray"]) == 0
    assert _files(str(tmp_path / "a.safetensors")) == _files(str(tmp_path / "b.safetensors"))


@pytest.mark.parametrize("shard", [None, 20_000])
def test_a_bad_tensor_fails_with_its_name(ray_local, tmp_path, shard):
    src = tmp_path / "bad.safetensors"
    w = np.ones((64, 256), np.float32)
    w[3, 7] = np.nan
    save_file({f"a{i}.weight": np.ones((64, 256), np.float32) for i in range(4)} | {"bad.weight": w}, str(src))
    with pytest.raises(qp.QuantpressError, match="bad.weight") as e:
        qp.compress(src, tmp_path / "out", "int4", executor="ray", max_shard_size=shard)
    assert "Ray" not in str(e.value)  # the tensor's own error, not a wrapped Ray traceback
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("placed", [False, True])
def test_a_shard_writer_stops_when_the_run_has_failed(ray_local, model, tmp_path, placed):
    # A failed sharded run drops a stop file in its staging folder (instead of ray.cancel,
    # which can abort the driver when it races a finishing task); every writer then stops after
    # its current unit and leaves no shard behind.
    from quantpress.pipeline import _choose_plans, _list_tensors
    from quantpress.sharded_container import predicted_bytes

    listing = _list_tensors(model)
    plans, _ = _choose_plans(model, listing, "int4", None, None, None)
    units = [[name] for name, _, _ in listing]
    sizes = [predicted_bytes(shape, dtype, plans[name]) for name, shape, dtype in listing] if placed else None
    staging = tmp_path / "staging"
    staging.mkdir()
    path = str(staging / "part.safetensors")
    rows, _, _ = executor.write_output_shard(model, path, units, plans, 0, 2, None, sizes)
    assert [r.name for r in rows] == [u[0] for u in units]  # not stopped: the whole shard
    os.unlink(path)
    (staging / executor.STOP_NAME).touch()
    with pytest.raises(qp.QuantpressError, match="another shard of this run failed"):
        executor.write_output_shard(model, path, units, plans, 0, 2, None, sizes)
    assert os.listdir(staging) == [executor.STOP_NAME]


def test_without_ray_the_error_says_what_to_install(monkeypatch, model, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(qp.QuantpressError, match=r"pip install 'quantpress\[ray\]'"):
        qp.compress(model, tmp_path / "out.safetensors", executor="ray")
    with pytest.raises(qp.QuantpressError, match=r"pip install 'quantpress\[ray\]'"):
        qp.KMeans(2).fit([np.zeros((4, 2), np.float32)], executor="ray")
    with pytest.raises(qp.QuantpressError, match="executor"):
        qp.compress(model, tmp_path / "out.safetensors", executor="dask")
    assert not (tmp_path / "out.safetensors").exists()


# --- k-means over shards -------------------------------------------------------------------

N, K, D = 20_000, 8, 4


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 5, (K, D))
    return (centres[rng.integers(0, K, N)] + rng.normal(0, 1, (N, D))).astype(np.float32)


def _same(a, b):
    assert a.centroids.tobytes() == b.centroids.tobytes()
    assert np.array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_ and a.reseeds_ == b.reseeds_


def _aligned(x):
    rows = _core.kmeans_chunk_rows(len(x), K, x.shape[1])
    assert rows < len(x) // 2  # three shards of whole chunks
    return [x[:rows], x[rows:2 * rows], x[2 * rows:]]


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_sharded_fit_equals_single_fit_on_chunk_aligned_shards(points, tmp_path, metric):
    single = qp.KMeans(K, n_iter=8, seed=1, metric=metric).fit(points)
    parts = _aligned(points)
    np.save(tmp_path / "s1.npy", parts[1])  # one shard read through a memmap
    sharded = qp.KMeans(K, n_iter=8, seed=1, metric=metric).fit([parts[0], tmp_path / "s1.npy", parts[2]])
    _same(sharded, single)


def test_sharded_fit_carries_each_shards_lloyd_state(tmp_path):
    # In-memory shards keep a LloydState each (the filtering tree at k = 512, d = 8); the result
    # is still the single fit's, bit for bit; memory-mapped shards keep none (no copy of them).
    from quantpress.kmeans_shards import ShardGroup

    rng = np.random.default_rng(4)
    k, d = 512, 8
    rows = _core.kmeans_chunk_rows(3 * 8192, k, d)
    x = (rng.normal(0, 4, (64, d))[rng.integers(0, 64, 3 * rows)] + rng.normal(0, 1, (3 * rows, d))).astype(np.float32)
    single = qp.KMeans(k, n_iter=5, seed=1).fit(x)
    shards = [x[:rows], x[rows:2 * rows], x[2 * rows:]]
    group = ShardGroup(shards, [None] * 3, "l2")
    assert all(s is not None for s in group.states)
    sharded = qp.KMeans(k, n_iter=5, seed=1).fit(shards)
    np.testing.assert_array_equal(sharded.centroids, single.centroids)
    assert sharded.inertia_ == single.inertia_ and np.array_equal(sharded.labels_, single.labels_)
    np.save(tmp_path / "s.npy", x[:rows])
    assert ShardGroup([str(tmp_path / "s.npy"), np.load(tmp_path / "s.npy", mmap_mode="r")], [None] * 2, "l2").states == [None, None]
    assert ShardGroup(shards, [None] * 3, "cosine").states == [None] * 3


def test_weighted_sharded_fit_equals_single_fit(points):
    w = np.random.default_rng(4).uniform(0, 2, N).astype(np.float32)
    rows = _core.kmeans_chunk_rows(N, K, D)
    single = qp.KMeans(K, n_iter=6, seed=2, tol=1e-4, n_init=2).fit(points, sample_weight=w)
    sharded = qp.KMeans(K, n_iter=6, seed=2, tol=1e-4, n_init=2).fit(_aligned(points), sample_weight=[w[:rows], w[rows:2 * rows], w[2 * rows:]])
    _same(sharded, single)


def test_empty_clusters_are_reseeded_as_in_the_single_fit(points):
    init = np.vstack([points[:K - 2], np.full((2, D), 1e3, np.float32)])  # two centroids nobody picks
    single = qp.KMeans(K, n_iter=3, init=init).fit(points)
    sharded = qp.KMeans(K, n_iter=3, init=init).fit(_aligned(points))
    assert single.reseeds_ >= 2
    _same(sharded, single)


def test_ray_fit_equals_local_sharded_fit(ray_local, points, tmp_path):
    cut = [points[:5_000], points[5_000:12_345], points[12_345:]]  # not chunk-aligned
    np.save(tmp_path / "s2.npy", cut[2])
    shards = [cut[0], cut[1], str(tmp_path / "s2.npy")]
    local = qp.KMeans(K, n_iter=8, seed=5).fit(shards)
    dist = qp.KMeans(K, n_iter=8, seed=5).fit(shards, executor="ray")
    _same(dist, local)
    single = qp.KMeans(K, n_iter=8, seed=5).fit(points)  # other grouping of the sums: rounding only
    np.testing.assert_allclose(dist.centroids, single.centroids, rtol=1e-5, atol=1e-5)
    aligned = qp.KMeans(K, n_iter=8, seed=5).fit(_aligned(points), executor="ray")
    _same(aligned, single)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_many_points_are_seeded_from_a_uniform_sample_read_shard_by_shard(monkeypatch, tmp_path, metric):
    from quantpress import kmeans as km_mod
    from quantpress.kmeans_shards import Shards

    monkeypatch.setattr(km_mod, "SEED_POINTS_MIN", 3000)
    monkeypatch.setattr(km_mod, "SEED_POINTS_PER_CENTROID", 10)
    rng = np.random.default_rng(3)
    x = (rng.normal(0, 5, (12, 4))[rng.integers(0, 12, 9000)] + rng.normal(0, 1, (9000, 4))).astype(np.float32)
    paths = []
    for i, part in enumerate(np.split(x, [2500, 6000])):
        paths.append(str(tmp_path / f"s{i}.npy"))
        np.save(paths[-1], part)
    with pytest.warns(UserWarning, match="uniform sample of 3000 of the 9000 points"):
        km = qp.KMeans(8, n_iter=4, seed=5, metric=metric, tol=1e-3).fit(paths)
    assert km.seed_sample_ == 3000
    # The seeds are k-means++ of exactly the sample the docs name, then the usual sharded Lloyd.
    sample = x[np.sort(np.random.default_rng(5).choice(9000, 3000, replace=False))]
    if metric == "cosine":
        sample = km_mod.unit_rows(sample)
    init = _core.kmeans_plusplus(sample, 4, 8, 5).reshape(8, 4)
    want = qp.KMeans(8, n_iter=4, init=init, metric=metric, tol=1e-3).fit(paths)
    np.testing.assert_array_equal(km.centroids, want.centroids)
    assert want.seed_sample_ is None
    # The tolerance's variance, computed shard by shard, is the whole data's.
    unit = km_mod.unit_rows(x) if metric == "cosine" else x
    np.testing.assert_allclose(Shards(paths).mean_variance(metric == "cosine"), np.var(unit, axis=0, dtype=np.float64).mean(),
                               rtol=1e-12)
    # At most the bound: every point, as the single fit.
    monkeypatch.setattr(km_mod, "SEED_POINTS_MIN", 9000)
    assert qp.KMeans(8, n_iter=4, seed=5, metric=metric).fit(paths).seed_sample_ is None


def test_shards_are_checked():
    km = qp.KMeans(2)
    with pytest.raises(qp.QuantpressError, match="columns"):
        km.fit([np.zeros((4, 2), np.float32), np.zeros((4, 3), np.float32)])
    with pytest.raises(qp.QuantpressError, match="at least one shard"):
        km.fit([])
    with pytest.raises(qp.QuantpressError, match="larger than the number of points"):
        qp.KMeans(9).fit([np.ones((4, 2), np.float32), np.ones((4, 2), np.float32)])
    with pytest.raises(qp.QuantpressError, match="sample_weight"):
        km.fit([np.ones((4, 2), np.float32)], sample_weight=[np.ones(3)])
    with pytest.raises(qp.QuantpressError, match="list of shards"):
        km.fit(np.ones((4, 2), np.float32), executor="ray")


class _Blocks:
    """What KMeans.fit uses of a ``ray.data.Dataset``: ``to_numpy_refs()``, the blocks as object
    references to ``{column: array}`` dicts, in order, with blocks cut exactly where a test wants
    them (a real Dataset is tested below)."""

    def __init__(self, ray, blocks):
        self.refs = [ray.put(b) for b in blocks]

    def to_numpy_refs(self):
        return list(self.refs)


def test_dataset_fit_equals_the_blocks_fitted_as_shards(ray_local, points):
    cut = [points[:4_000], points[4_000:11_000], points[11_000:]]
    tensor = _Blocks(ray_local, [{"data": c} for c in cut])  # one (n, d) tensor column
    local = qp.KMeans(K, n_iter=6, seed=7).fit(cut)
    _same(qp.KMeans(K, n_iter=6, seed=7).fit(tensor, executor="ray"), local)
    _same(qp.KMeans(K, n_iter=6, seed=7).fit(tensor), local)  # blocks fetched to this process
    columns = _Blocks(ray_local, [{f"x{j}": c[:, j].astype(np.float64) for j in range(D)} for c in cut])
    _same(qp.KMeans(K, n_iter=6, seed=7).fit(columns, executor="ray"), local)  # numeric columns, in order
    with pytest.raises(qp.QuantpressError, match="sample_weight"):
        qp.KMeans(K).fit(tensor, sample_weight=[np.ones(len(c)) for c in cut])
    bad = _Blocks(ray_local, [{"a": np.ones((5, 2)), "b": np.ones(5)}])
    with pytest.raises(qp.QuantpressError, match="tensor column"):
        qp.KMeans(2).fit(bad, executor="ray")


def test_real_ray_dataset_fit_equals_its_blocks_fitted_as_shards(ray_local, points):
    import ray.data

    ds = ray.data.from_numpy([points[:5_000], points[5_000:]])  # one block per array, in order
    blocks = [ray_local.get(r)["data"] for r in ds.to_numpy_refs()]
    assert sum(len(b) for b in blocks) == len(points)
    local = qp.KMeans(K, n_iter=5, seed=11).fit(blocks)
    _same(qp.KMeans(K, n_iter=5, seed=11).fit(ds, executor="ray"), local)
    _same(qp.KMeans(K, n_iter=5, seed=11).fit(ds), local)
    rows = ray.data.from_items([{"a": float(p[0]), "b": float(p[1])} for p in points[:300]])
    cols = np.concatenate([np.stack([ray_local.get(r)[c] for c in ("a", "b")], axis=1) for r in rows.to_numpy_refs()])
    _same(qp.KMeans(4, n_iter=3, seed=1).fit(rows, executor="ray"), qp.KMeans(4, n_iter=3, seed=1).fit([cols.astype(np.float32)]))


def test_ray_pool_actors_are_reused_and_survive_a_worker_death(ray_local, points):
    shards = _aligned(points)
    first = qp.KMeans(K, n_iter=4, seed=3).fit(shards, executor="ray")
    pool = list(executor._POOL[executor.pool_key(ray_local)])
    ray_local.kill(pool[0], no_restart=False)  # its worker dies; Ray restarts the actor
    again = qp.KMeans(K, n_iter=4, seed=3).fit(shards, executor="ray")
    assert executor._POOL[executor.pool_key(ray_local)][:len(pool)] == pool
    _same(again, first)
    _same(first, qp.KMeans(K, n_iter=4, seed=3).fit(points))


@pytest.mark.parametrize("module", ["quantpress.kmeans_shards", "quantpress.executor", "quantpress.sharded_container"])
def test_docstring_examples(module):
    import doctest
    import importlib

    failed, attempted = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failed == 0
