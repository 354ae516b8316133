"""Sharded checkpoints: HF safetensors indexes and GGUF split sets read as one model, sharded
container output (index written last), validation of bad sets before any work, and memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

import quantpress as qp
from quantpress import pipeline
from quantpress.formats import open_model
from quantpress.sharded_container import ShardedWriter, parse_size

RNG = np.random.default_rng(7)


def _tensors() -> dict[str, np.ndarray]:
    return {
        "emb.weight": RNG.standard_normal((64, 256)).astype(np.float32),
        "l0.weight": RNG.standard_normal((128, 256)).astype(np.float16),
        "l0.bias": RNG.standard_normal(128).astype(np.float32),
        "l1.weight": RNG.standard_normal((96, 512)).astype(np.float32),
        "l1.bias": RNG.standard_normal(96).astype(np.float32),
        "head.weight": RNG.standard_normal((32, 256)).astype(np.float32),
    }


TENSORS = _tensors()
GROUPS = [["emb.weight", "l0.bias"], ["l0.weight", "l1.bias"], ["l1.weight", "head.weight"]]


def write_hf(folder: str, tensors=TENSORS, groups=GROUPS, index_name="model.safetensors.index.json",
             weight_map=None) -> str:
    """A Hugging Face style sharded checkpoint; returns the index path."""
    os.makedirs(folder, exist_ok=True)
    wm = {}
    for k, names in enumerate(groups, 1):
        fname = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: tensors[n] for n in names}, os.path.join(folder, fname))
        wm.update((n, fname) for n in names)
    index = os.path.join(folder, index_name)
    total = sum(t.nbytes for t in tensors.values())
    with open(index, "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map or wm}, f)
    return index


def write_gguf_split(folder: str, tensors=TENSORS, per_split=2) -> list[str]:
    """A split set written by the gguf package's own splitting writer (llama.cpp convention)."""
    os.makedirs(folder, exist_ok=True)
    w = gguf.GGUFWriter(os.path.join(folder, "m.gguf"), "llama", split_max_tensors=per_split)
    w.add_block_count(2)
    for n, t in tensors.items():
        w.add_tensor(n, t)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return sorted(os.path.join(folder, n) for n in os.listdir(folder))


def write_gguf_file(path: str, tensors: dict[str, np.ndarray], keys: dict[str, int]) -> None:
    """One GGUF file with hand-set split keys (to forge bad sets)."""
    w = gguf.GGUFWriter(path, "llama")
    for k, v in keys.items():
        (w.add_int32 if k == "split.tensors.count" else w.add_uint16)(k, v)
    for n, t in tensors.items():
        w.add_tensor(n, t)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def assert_same(model, tensors=TENSORS):
    assert sorted(model) == sorted(tensors)
    for n, t in tensors.items():
        a = model[n].numpy()
        assert a.dtype == t.dtype and a.shape == t.shape
        assert np.array_equal(a, t), n


# --- reading -----------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["directory", "index", "custom-index-name"])
def test_hf_sharded_opens_as_one_model(tmp_path, how):
    name = "weights.safetensors.index.json" if how == "custom-index-name" else "model.safetensors.index.json"
    index = write_hf(str(tmp_path), index_name=name)
    with open_model(str(tmp_path) if how != "index" else index) as m:
        assert m.format == "safetensors" and len(m.shards) == 3
        assert m.metadata["total_size"] == str(sum(t.nbytes for t in TENSORS.values()))
        assert_same(m)


@pytest.mark.parametrize("which", [0, 1, 2, "dir"])
def test_gguf_split_set_opens_from_any_file(tmp_path, which):
    files = write_gguf_split(str(tmp_path))
    assert [os.path.basename(f) for f in files] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    with open_model(str(tmp_path) if which == "dir" else files[which]) as m:
        assert m.format == "gguf" and m.shards == tuple(files)
        assert m.metadata["llama.block_count"] == "2"  # only the first split carries it
        assert_same(m)


def test_each_split_is_a_valid_gguf_file(tmp_path):
    files = write_gguf_split(str(tmp_path))
    seen = []
    for i, f in enumerate(files):
        r = gguf.GGUFReader(f)
        assert int(r.fields["split.no"].parts[-1][0]) == i
        seen += [t.name for t in r.tensors]
    assert sorted(seen) == sorted(TENSORS)


def test_directory_with_one_file_opens_that_file(tmp_path):
    save_file({"w": TENSORS["emb.weight"]}, str(tmp_path / "x.safetensors"))
    with open_model(str(tmp_path)) as m:
        assert np.array_equal(m["w"].numpy(), TENSORS["emb.weight"])


# --- bad input -----------------------------------------------------------------------------------

def _bad_hf(tmp_path, case: str) -> tuple[str, str]:
    """Builds one broken HF set; returns (path to open, a string the error must contain)."""
    d = str(tmp_path / "in")
    index = write_hf(d)
    doc = json.load(open(index))
    wm = doc["weight_map"]
    if case == "dotdot":
        save_file({"l1.bias": TENSORS["l1.bias"]}, str(tmp_path / "evil.safetensors"))
        wm["l1.bias"] = "../evil.safetensors"
        needle = "../evil.safetensors"
    elif case == "absolute":
        wm["l1.bias"] = str(tmp_path / "in" / "model-00002-of-00003.safetensors")
        needle = "model-00002-of-00003.safetensors"
    elif case == "symlink-escape":
        save_file({"l1.bias": TENSORS["l1.bias"]}, str(tmp_path / "outside.safetensors"))
        os.symlink(str(tmp_path / "outside.safetensors"), os.path.join(d, "link.safetensors"))
        wm["l1.bias"] = "link.safetensors"
        needle = "link.safetensors"
    elif case == "missing-shard":
        os.unlink(os.path.join(d, "model-00003-of-00003.safetensors"))
        needle = "model-00003-of-00003.safetensors"
    elif case == "duplicated-shard":
        os.symlink("model-00002-of-00003.safetensors", os.path.join(d, "again.safetensors"))
        wm["l1.bias"] = "again.safetensors"
        needle = "again.safetensors"
    elif case == "tensor-twice-in-index":
        text = json.dumps(doc)[:-2] + ', "l0.bias": "model-00002-of-00003.safetensors"}}'
        open(index, "w").write(text)
        return index, "l0.bias"
    elif case == "tensor-in-two-shards":
        save_file({"l0.weight": TENSORS["l0.weight"], "l1.bias": TENSORS["l1.bias"],
                   "head.weight": TENSORS["head.weight"]}, os.path.join(d, "model-00002-of-00003.safetensors"))
        needle = "head.weight"
    elif case == "tensor-not-in-shard":
        wm["l1.bias"] = "model-00001-of-00003.safetensors"
        needle = "l1.bias"
    elif case == "unlisted-tensor":
        del wm["l1.bias"]
        needle = "l1.bias"
    json.dump(doc, open(index, "w"))
    return index, needle


BAD_HF = ["dotdot", "absolute", "symlink-escape", "missing-shard", "duplicated-shard",
          "tensor-twice-in-index", "tensor-in-two-shards", "tensor-not-in-shard", "unlisted-tensor"]


@pytest.mark.parametrize("case", BAD_HF)
def test_bad_hf_sets_refused_before_any_output(tmp_path, case):
    index, needle = _bad_hf(tmp_path, case)
    with pytest.raises(qp.QuantpressError, match="model.safetensors.index.json") as e:
        open_model(index)
    assert needle in str(e.value)
    out = tmp_path / "out"
    with pytest.raises(qp.QuantpressError, match=needle.replace(".", r"\.")):
        qp.compress(os.path.dirname(index), str(out), "int8", max_shard_size="1MB")
    assert not out.exists()


def _bad_split(tmp_path, case: str) -> tuple[str, str]:
    d = str(tmp_path / "in")
    os.makedirs(d)
    a, b, c = {"a": TENSORS["l0.bias"]}, {"b": TENSORS["l1.bias"]}, {"c": TENSORS["emb.weight"]}
    name = lambda i, n: os.path.join(d, f"m-{i:05d}-of-{n:05d}.gguf")  # noqa: E731
    keys = lambda no, n, tot=3: {"split.no": no, "split.count": n, "split.tensors.count": tot}  # noqa: E731
    if case == "gap":
        write_gguf_file(name(1, 3), a, keys(0, 3)); write_gguf_file(name(3, 3), c, keys(2, 3))
        return name(1, 3), "m-00002-of-00003.gguf"
    if case == "count-mismatch":
        write_gguf_file(name(1, 2), a, keys(0, 2)); write_gguf_file(name(2, 2), b, keys(1, 3))
        return name(1, 2), "m-00002-of-00002.gguf"
    if case == "split-no-mismatch":
        write_gguf_file(name(1, 2), a, keys(0, 2)); write_gguf_file(name(2, 2), b, keys(0, 2))
        return name(1, 2), "m-00002-of-00002.gguf"
    if case == "tensor-in-two-splits":
        write_gguf_file(name(1, 2), a, keys(0, 2, 2)); write_gguf_file(name(2, 2), a, keys(1, 2, 2))
        return name(1, 2), "m-00002-of-00002.gguf"
    if case == "tensor-count":
        write_gguf_file(name(1, 2), a, keys(0, 2, 5)); write_gguf_file(name(2, 2), b, keys(1, 2, 5))
        return name(2, 2), "m-00001-of-00002.gguf"
    if case == "missing-keys":
        write_gguf_file(name(1, 2), a, keys(0, 2, 2)); write_gguf_file(name(2, 2), b, {})
        return name(1, 2), "m-00002-of-00002.gguf"
    assert case == "renamed-split"
    write_gguf_file(os.path.join(d, "part.gguf"), a, keys(0, 2, 2))
    return os.path.join(d, "part.gguf"), "part.gguf"


@pytest.mark.parametrize("case", ["gap", "count-mismatch", "split-no-mismatch", "tensor-in-two-splits",
                                  "tensor-count", "missing-keys", "renamed-split"])
def test_bad_split_sets_refused_before_any_output(tmp_path, case):
    path, needle = _bad_split(tmp_path, case)
    with pytest.raises(qp.QuantpressError) as e:
        open_model(path)
    assert needle in str(e.value)
    out = tmp_path / "out"
    with pytest.raises(qp.QuantpressError):
        qp.compress(path, str(out), "int8", max_shard_size="1MB")
    assert not out.exists()


def test_ambiguous_directories_refused(tmp_path):
    for n in ("a", "b"):
        save_file({n: TENSORS["l0.bias"]}, str(tmp_path / f"{n}.safetensors"))
    with pytest.raises(qp.QuantpressError, match="several model files"):
        open_model(str(tmp_path))
    with pytest.raises(qp.QuantpressError, match="several model files"):
        qp.load(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(qp.QuantpressError, match="holds no index"):
        open_model(str(empty))


# --- sharded output -------------------------------------------------------------------------------

def _check_same_as_single(sharded_dir, single_file):
    a, b = qp.load(str(sharded_dir)), qp.load(str(single_file))
    assert sorted(a) == sorted(b) == sorted(TENSORS)
    for n in b:
        assert a.info(n) == b.info(n)
        x, y = np.asarray(a[n]), np.asarray(b[n])
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), n


@pytest.mark.parametrize("source", ["single", "hf-sharded", "gguf-split"])
def test_compress_to_shards_equals_single_file(tmp_path, source):
    single_src = tmp_path / "in.safetensors"
    save_file(TENSORS, str(single_src))
    src = {"single": str(single_src), "hf-sharded": os.path.dirname(write_hf(str(tmp_path / "hf"))),
           "gguf-split": write_gguf_split(str(tmp_path / "gg"))[1]}[source]
    limit = 20_000
    rep = qp.compress(src, str(tmp_path / "out"), "int4", max_shard_size=limit)
    ref = qp.compress(str(single_src), str(tmp_path / "ref.safetensors"), "int4")
    _check_same_as_single(tmp_path / "out", tmp_path / "ref.safetensors")
    index = json.load(open(tmp_path / "out" / "model.safetensors.index.json"))
    shards = sorted(n for n in os.listdir(tmp_path / "out") if n.endswith(".safetensors"))
    assert len(shards) >= 3 and shards == [f"model-{k:05d}-of-{len(shards):05d}.safetensors" for k in range(1, len(shards) + 1)]
    assert sorted(set(index["weight_map"].values())) == shards
    assert index["metadata"]["quantpress.format_version"] == "1"
    sizes = []
    for s in shards:  # each shard is a valid container on its own, of whole tensors
        c = qp.load(str(tmp_path / "out" / s))
        assert c.is_container and len(c) >= 1
        sizes.append(sum(c.info(n)["nbytes"] for n in c))
        assert sizes[-1] <= limit or len(c) == 1
    assert index["metadata"]["total_size"] == sum(sizes) == sum(t.output_bytes for t in rep.tensors)
    assert rep.output_bytes == sum(os.path.getsize(tmp_path / "out" / n) for n in os.listdir(tmp_path / "out"))
    assert [t.name for t in rep.tensors] and ref.bits_per_weight == pytest.approx(rep.bits_per_weight)
    # the index opens too, and open_model sees the stored (compressed) tensors of every shard
    assert sorted(qp.load(str(tmp_path / "out" / "model.safetensors.index.json"))) == sorted(TENSORS)
    with open_model(str(tmp_path / "out")) as m:
        assert sorted(m) == sorted(index["weight_map"])


def test_tensor_larger_than_the_limit_gets_its_own_shard(tmp_path):
    src = tmp_path / "in.safetensors"
    save_file(TENSORS, str(src))
    qp.compress(str(src), str(tmp_path / "out"), "int8", max_shard_size=1)
    shards = [n for n in os.listdir(tmp_path / "out") if n.endswith(".safetensors")]
    assert len(shards) == len(TENSORS)


def test_interrupted_run_leaves_no_loadable_model(tmp_path, monkeypatch):
    src = tmp_path / "in.safetensors"
    save_file(TENSORS, str(src))
    real, calls = pipeline.apply_plan, []

    def failing(plan, w):
        calls.append(1)
        if len(calls) == 5:
            raise qp.QuantpressError("simulated failure")
        return real(plan, w)

    monkeypatch.setattr(pipeline, "apply_plan", failing)
    out = tmp_path / "out"
    with pytest.raises(qp.QuantpressError, match="simulated"):
        qp.compress(str(src), str(out), "int4", max_shard_size=20_000)
    assert os.listdir(out) == []  # shards already finished were removed again
    with pytest.raises(qp.QuantpressError):
        qp.load(str(out))


def test_crash_before_the_index_leaves_no_loadable_model(tmp_path, monkeypatch):
    """A hard crash (no cleanup) after the shards got their final names: no index, refused."""
    src = tmp_path / "in.safetensors"
    save_file(TENSORS, str(src))

    def crash(self, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(ShardedWriter, "_write_index", crash)
    monkeypatch.setattr(ShardedWriter, "abort", lambda self: None)  # as if the process died
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        qp.compress(str(src), str(out), "int4", max_shard_size=20_000)
    assert len([n for n in os.listdir(out) if n.endswith(".safetensors")]) > 1
    assert not any(n.endswith(".json") for n in os.listdir(out))
    with pytest.raises(qp.QuantpressError, match="no index"):
        qp.load(str(out))
    with pytest.raises(qp.QuantpressError, match="no index"):
        open_model(str(out))


def test_output_directory_holding_a_model_is_refused(tmp_path):
    src = tmp_path / "in.safetensors"
    save_file(TENSORS, str(src))
    qp.compress(str(src), str(tmp_path / "out"), "int8", max_shard_size="20kB")
    before = sorted(os.listdir(tmp_path / "out"))
    with pytest.raises(qp.QuantpressError, match="already holds"):
        qp.compress(str(src), str(tmp_path / "out"), "int4", max_shard_size="20kB")
    assert sorted(os.listdir(tmp_path / "out")) == before


def test_sharded_load_checks_the_index(tmp_path):
    src = tmp_path / "in.safetensors"
    save_file(TENSORS, str(src))
    out = tmp_path / "out"
    qp.compress(str(src), str(out), "int4", max_shard_size=20_000)
    index = out / "model.safetensors.index.json"
    doc = json.load(open(index))
    victim = next(n for n in doc["weight_map"] if n.endswith(".scale"))
    del doc["weight_map"][victim]
    json.dump(doc, open(index, "w"))
    with pytest.raises(qp.QuantpressError, match=victim.replace(".", r"\.")):
        qp.load(str(out))


def test_parse_size():
    assert parse_size("500MB") == 500 * 10**6 and parse_size("2GB") == 2 * 10**9
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("1.5kb") == 1500 and parse_size(7) == 7
    for bad in ("", "2XB", "-1GB", "0", 0, "GB"):
        with pytest.raises(qp.QuantpressError):
            parse_size(bad)


def test_cli_max_shard_size(tmp_path):
    from quantpress.cli import main

    src = tmp_path / "in.safetensors"
    save_file(TENSORS, str(src))
    assert main(["compress", str(src), "-o", str(tmp_path / "out"), "--recipe", "int8", "--max-shard-size", "0.03MB"]) == 0
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    m = qp.load(str(tmp_path / "out"))
    assert len(m.shards) > 1 and sorted(m) == sorted(TENSORS)  # type: ignore[attr-defined]
    assert main(["compress", str(src), "-o", str(tmp_path / "o2"), "--max-shard-size", "lots"]) == 1
    assert not (tmp_path / "o2").exists()


# --- memory ---------------------------------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent("""
    import json, os, resource, sys
    import numpy as np
    import quantpress as qp
    from safetensors.numpy import save_file

    src, dst, n, rows, cols = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    # warm up (thread pools, allocator arenas, imports) on a tiny model
    warm = os.path.join(os.path.dirname(dst), "warm.safetensors")
    save_file({"w": np.ones((rows // 8, cols), np.float32)}, warm)
    qp.compress(warm, os.path.join(os.path.dirname(dst), "warm-out.safetensors"), "int4")
    def vm(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak RSS) to the current RSS
    base_rss, base_data = vm("VmRSS:"), vm("VmData:")
    largest = rows * cols * 4
    limit = base_data + 6 * largest
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))  # anonymous memory only, not file maps
    rep = qp.compress(src, dst, "int4", max_shard_size=4 * largest)
    print(json.dumps({"base_rss": base_rss, "peak_rss": vm("VmHWM:"),
                      "data_limit": limit, "base_data": base_data, "tensors": len(rep.tensors), "input": rep.input_bytes}))
""")


def test_model_larger_than_the_memory_limit_compresses(tmp_path):
    """A 16-tensor, 128 MiB sharded model compresses under a data limit of about 6 tensors
    (48 MiB above the warmed-up baseline) and its peak RSS stays within 6 tensors of it too."""
    n, rows, cols = 16, 1024, 2048  # 8 MiB per float32 tensor
    d = tmp_path / "in"
    d.mkdir()
    wm = {}
    for k in range(4):
        fname = f"model-{k + 1:05d}-of-00004.safetensors"
        part = {f"layer{4 * k + j}.weight": np.random.default_rng(k * 4 + j).standard_normal((rows, cols), np.float32)
                for j in range(4)}
        save_file(part, str(d / fname))
        wm.update((t, fname) for t in part)
        del part
    json.dump({"metadata": {}, "weight_map": wm}, open(d / "model.safetensors.index.json", "w"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    r = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(d), str(tmp_path / "out"), str(n), str(rows), str(cols)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    largest = rows * cols * 4
    assert res["tensors"] == n and res["input"] == n * largest
    assert res["data_limit"] - res["base_data"] < res["input"] / 2  # the model could not be held in memory
    assert res["peak_rss"] - res["base_rss"] < 6 * largest, res
    print(f"peak RSS {(res['peak_rss'] - res['base_rss']) / 2**20:.1f} MiB above baseline, model {res['input'] / 2**20:.0f} MiB")
    assert sorted(qp.load(str(tmp_path / "out"))) == sorted(wm)


# --- GGUF split output ----------------------------------------------------------------------------

def _f16_gguf(path: str, split_max_tensors: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    ts = {f"blk.{i}.ffn_up.weight": rng.standard_normal((64, 256)).astype(np.float16) for i in range(3)}
    ts["blk.0.attn_norm.weight"] = np.ones(256, np.float32)
    ts["output.weight"] = rng.standard_normal((32, 256)).astype(np.float16)
    w = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    w.add_block_count(3)
    for n, t in ts.items():
        w.add_tensor(n, t)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return ts


def test_gguf_requantize_to_splits_matches_single_file(tmp_path):
    src = str(tmp_path / "f16.gguf")
    ts = _f16_gguf(src)
    one = qp.gguf_requantize(src, str(tmp_path / "one.gguf"), "Q4_K_M")
    rep = qp.gguf_requantize(src, str(tmp_path / "q4.gguf"), "Q4_K_M", max_shard_size=12_000)
    n = len(rep.files)
    assert n >= 3 and rep.dst == rep.files[0]
    assert [os.path.basename(p) for p in rep.files] == [f"q4-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    assert sorted(os.listdir(tmp_path)) == sorted(["f16.gguf", "one.gguf", *map(os.path.basename, rep.files)])
    assert rep.types() == one.types()
    single = qp.read_gguf(str(tmp_path / "one.gguf"))
    with open_model(rep.files[-1]) as m:  # any split opens the whole set
        assert sorted(m) == sorted(ts) and m.metadata["general.file_type"] == "15"
        for name in ts:
            assert m[name].dtype == single[name].dtype
            assert m[name].numpy().tobytes() == single[name].numpy().tobytes(), name
    for i, p in enumerate(rep.files):  # each split is a GGUF file the gguf package reads
        r = gguf.GGUFReader(p)
        assert [int(r.fields[k].parts[-1][0]) for k in ("split.no", "split.count", "split.tensors.count")] == [i, n, len(ts)]
        assert ("general.architecture" in r.fields) == (i == 0)  # metadata in the first split only
        data_bytes = sum(int(t.n_bytes) for t in r.tensors)
        assert data_bytes <= 12_000 or len(r.tensors) == 1


def test_gguf_split_failure_leaves_nothing(tmp_path, monkeypatch):
    from quantpress.formats import gguf_write

    src = str(tmp_path / "f16.gguf")
    _f16_gguf(src)
    real, calls = gguf_write.GGUFFile, []

    def failing(path):
        calls.append(path)
        if len(calls) == 3:  # the check of the second split written
            raise qp.QuantpressError("simulated failure")
        return real(path)

    monkeypatch.setattr(gguf_write, "GGUFFile", failing)
    with pytest.raises(qp.QuantpressError, match="simulated"):
        qp.gguf_requantize(src, str(tmp_path / "q4.gguf"), "Q8_0", max_shard_size=12_000)
    assert os.listdir(tmp_path) == ["f16.gguf"]


@pytest.mark.parametrize("recipe", ["int8", "int4", "nf4", "q4_k", "q4_k_m", "vq2", "prune50-int4", "nm24-int8"])
def test_predicted_bytes_are_exact_and_an_upper_bound_for_row_pruning(recipe):
    from quantpress.executor import _Collector
    from quantpress.recipe import Plan, fit, get_recipe
    from quantpress.sharded_container import predicted_bytes

    rng = np.random.default_rng(5)
    cases = [("layers.0.mlp.down_proj.weight", (64, 256), np.float32), ("layers.1.self_attn.v_proj.weight", (96, 512), np.float16),
             ("layers.2.mlp.up_proj.weight", (3, 32, 256), np.float32), ("layers.0.bias", (300,), np.float16),
             ("embed_tokens.weight", (128, 256), np.float32)]
    plans = get_recipe(recipe).plan_all([(n, s, np.dtype(t).name) for n, s, t in cases])
    extra = [Plan("scalar", {"bits": b, "group_size": g, "scheme": sc, "axis": ax, "scale_dtype": sd})
             for b, g, sc, ax, sd in [(3, 64, "affine", -1, "float32"), (2, None, "symmetric", 0, "float16"), (8, None, "symmetric", None, "float32")]]
    extra.append(Plan("scalar", {"bits": 4, "group_size": 64, "scheme": "nf4", "double_quant": True}))
    for name, shape, t in cases:
        for plan in [plans[name]] + [fit(p, shape) for p in (extra if recipe == "int8" else [])]:
            w = rng.standard_normal(shape).astype(t)
            sink = _Collector()
            pipeline._compress_one(sink, name, w, plan)
            actual = sink.add(*sink.entries[0])
            predicted = predicted_bytes(shape, np.dtype(t).name, plan)
            assert predicted == actual, (name, plan)
    structured = Plan("sparse", {"prune": "l2_rows", "sparsity": 0.25, "bits": None})
    sink = _Collector()
    pipeline._compress_one(sink, "w", rng.standard_normal((64, 256)).astype(np.float32), structured)
    actual = sink.add(*sink.entries[0])
    assert actual <= predicted_bytes((64, 256), "float32", structured) <= 2 * actual


def test_each_shard_is_written_once(tmp_path, monkeypatch):
    """Shards are planned before compressing, so each gets its header room and its data is
    written once, never copied after the header."""
    import quantpress.container as container

    src = tmp_path / "in.safetensors"
    save_file(TENSORS, str(src))

    def no_copy(*a, **k):
        raise AssertionError("a shard was copied")

    monkeypatch.setattr(container.shutil, "copyfileobj", no_copy)
    qp.compress(str(src), str(tmp_path / "out"), "int4", max_shard_size=20_000)
    assert len([n for n in os.listdir(tmp_path / "out") if n.endswith(".safetensors")]) >= 3


def test_gguf_requantize_reads_a_split_set_as_the_single_file(tmp_path):
    _f16_gguf(str(tmp_path / "f16.gguf"))
    os.makedirs(tmp_path / "split")
    _f16_gguf(str(tmp_path / "split" / "m.gguf"), split_max_tensors=2)
    splits = sorted(os.listdir(tmp_path / "split"))
    assert splits == [f"m-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    one = qp.gguf_requantize(str(tmp_path / "f16.gguf"), str(tmp_path / "one.gguf"), "Q4_K_M")
    expected = open(tmp_path / "one.gguf", "rb").read()
    for i, src in enumerate([tmp_path / "split" / splits[1], tmp_path / "split"]):  # any split, or the directory
        rep = qp.gguf_requantize(str(src), str(tmp_path / f"out{i}.gguf"), "Q4_K_M")
        assert open(tmp_path / f"out{i}.gguf", "rb").read() == expected
        assert rep.types() == one.types() and rep.src == str(tmp_path / "split" / splits[0])
    with pytest.raises(qp.QuantpressError, match="input"):
        qp.gguf_requantize(str(tmp_path / "split" / splits[0]), str(tmp_path / "split" / splits[2]), "Q4_K_M")
    os.remove(tmp_path / "split" / splits[1])  # a gap: refused before any output
    with pytest.raises(qp.QuantpressError, match="gap"):
        qp.gguf_requantize(str(tmp_path / "split" / splits[0]), str(tmp_path / "bad.gguf"), "Q4_K_M")
    assert not (tmp_path / "bad.gguf").exists()
