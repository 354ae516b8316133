"""Recipe files: TOML and YAML give the same recipe; bad YAML (malformed, not a mapping, object
tags, a missing PyYAML) is a QuantpressError naming the file; the CLI takes a .yaml recipe."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

import quantpress as qp
from quantpress import cli
from quantpress.recipe import get_recipe

from conftest import weight_like

TOML = """
base = "int4"
min_elements = 0
skip = ["frozen"]
default = {method = "scalar", bits = 6, group_size = 64}
[[rules]]
pattern = "*.attn.*"
method = "gguf"
type = "Q8_0"
[[rules]]
regex = "mlp\\\\.(up|down)"
method = "scalar"
bits = 3
group_size = 32
algorithm = "hqq"
[[rules]]
pattern = "*.head.*"
method = "int8"
"""

YAML = r"""
base: int4
min_elements: 0
skip: [frozen]
default: {method: scalar, bits: 6, group_size: 64}
rules:
  - pattern: "*.attn.*"
    method: gguf
    type: Q8_0
  - regex: 'mlp\.(up|down)'
    method: scalar
    bits: 3
    group_size: 32
    algorithm: hqq
  - pattern: "*.head.*"
    method: int8
"""

NAMES = ["h.0.attn.q.weight", "h.0.mlp.up.weight", "h.0.mlp.down.weight", "h.0.head.w", "h.0.other.weight",
         "h.0.frozen.weight", "h.0.norm.weight", "embed_tokens.weight"]


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_recipe_equals_the_toml_recipe(tmp_path, suffix):
    (tmp_path / "r.toml").write_text(TOML)
    (tmp_path / f"r{suffix}").write_text(YAML)
    t, y = get_recipe(str(tmp_path / "r.toml")), get_recipe(str(tmp_path / f"r{suffix}"))
    assert y == t and y.name == "r"  # frozen dataclasses: rules, plans, skips and default all equal
    shape = (64, 256)
    plans = {n: y.plan(n, shape, "float32").describe() for n in NAMES}
    assert plans == {n: t.plan(n, shape, "float32").describe() for n in NAMES}
    assert plans["h.0.attn.q.weight"] == "Q8_0" and plans["h.0.mlp.down.weight"] == "int3 g32 affine hqq"
    assert plans["h.0.other.weight"] == "int6 g64 affine rtn" and plans["h.0.frozen.weight"] == "keep"
    assert plans["embed_tokens.weight"] == "int8 channel symmetric rtn"  # the int4 base's own rule


@pytest.mark.parametrize("text, message", [
    ("rules: [pattern: '*'\n  method: int8", "not valid YAML"),            # malformed
    ("base: int4\nbase: [\n", "not valid YAML"),
    ("- pattern: '*'\n  method: int8\n", "must be a mapping of recipe keys, not list"),
    ("just a string\n", "must be a mapping of recipe keys, not str"),
    ("", "must be a mapping of recipe keys, not NoneType"),                  # an empty document
    ("rules: 5\n", "'rules' must be a list"),
    ("base: [int4]\n", "unknown base preset"),
    ("rulez: []\n1: 2\n", "unknown key 1"),
    ("rules:\n  - pattern: '*'\n    method: scalar\n    colour: 1\n", "rule 1: method 'scalar' takes no parameter 'colour'"),
    ("min_elements: 1.5\n", "min_elements must be a non-negative integer"),
])
def test_bad_yaml_recipes_name_the_file_and_field(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(qp.QuantpressError, match="bad.yaml") as e:
        get_recipe(str(p))
    assert message in str(e.value)


def test_toml_errors_name_the_file_too(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("rulez = []\n")
    with pytest.raises(qp.QuantpressError, match="bad.toml: recipe 'bad': unknown key 'rulez'"):
        get_recipe(str(p))
    p.write_text("base = \n")
    with pytest.raises(qp.QuantpressError, match="bad.toml: not valid TOML"):
        get_recipe(str(p))


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['touch {marker}']",
                                 "!!python/object:collections.OrderedDict {{}}",
                                 "!!python/name:os.system ''"])
def test_yaml_object_tags_are_refused_without_running(tmp_path, tag):
    marker = tmp_path / "ran"
    p = tmp_path / "evil.yaml"
    p.write_text(f"base: int4\ndefault: {tag.format(marker=marker)}\n")
    with pytest.raises(qp.QuantpressError, match="evil.yaml: not valid YAML .*python/"):
        get_recipe(str(p))
    assert not marker.exists()


def test_yaml_recipe_too_large_is_refused(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text("# " + "x" * (1 << 20) + "\nbase: int4\n")
    with pytest.raises(qp.QuantpressError, match="big.yaml: larger than"):
        get_recipe(str(p))


def test_missing_pyyaml_says_how_to_install(tmp_path, monkeypatch):
    p = tmp_path / "r.yaml"
    p.write_text(YAML)
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    with pytest.raises(qp.QuantpressError, match=r"r.yaml: .*pip install 'quantpress\[yaml\]'"):
        get_recipe(str(p))


def test_cli_compress_with_a_yaml_recipe(tmp_path, rng, capsys):
    d = {"h.0.attn.q.weight": weight_like(rng, (64, 256)), "h.0.mlp.up.weight": weight_like(rng, (64, 256)),
         "h.0.other.weight": weight_like(rng, (64, 256)), "h.0.norm.weight": np.ones(256, np.float32)}
    save_file(d, str(tmp_path / "m.safetensors"))
    (tmp_path / "r.yaml").write_text(YAML)
    out = tmp_path / "c.safetensors"
    assert cli.main(["compress", str(tmp_path / "m.safetensors"), "-o", str(out), "--recipe", str(tmp_path / "r.yaml")]) == 0
    assert "r.yaml" in capsys.readouterr().out
    methods = {n: qp.load(out).info(n)["method"] for n in d}
    assert methods == {"h.0.attn.q.weight": "gguf", "h.0.mlp.up.weight": "scalar", "h.0.other.weight": "scalar",
                       "h.0.norm.weight": "none"}
    loaded = qp.load(out)
    assert loaded.info("h.0.attn.q.weight")["params"]["type"] == "Q8_0"
    assert loaded.info("h.0.mlp.up.weight")["params"]["bits"] == 3
    assert loaded.info("h.0.other.weight")["params"]["bits"] == 6
    (tmp_path / "bad.yaml").write_text("- 1\n")
    assert cli.main(["compress", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "x.safetensors"),
                     "--recipe", str(tmp_path / "bad.yaml")]) == 1
    assert "bad.yaml" in capsys.readouterr().out and not (tmp_path / "x.safetensors").exists()
