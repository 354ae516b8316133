"""Recipes: which compression method applies to which tensor of a model.

A recipe is an ordered list of rules (a name pattern and a method with its parameters; the first
match wins) and a default method, behind a fixed set of skips: tensors that are not floating
point, have fewer than two dimensions or fewer than ``min_elements`` values, or whose names look
like norms or biases stay as they are (they are a tiny share of the bytes and very sensitive).
Presets follow llama.cpp's and NNCF's practice of keeping embeddings and output heads at 8 bits
in 4-bit recipes. A method that does not fit a tensor's shape falls back (documented in
docs/format.md, "Recipes") instead of failing the whole model.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence, Union

from ._core import QuantpressError
from .gguf import GGUF_TYPES

METHODS = ("keep", "scalar", "gguf", "vq", "sparse")
_PARAMS: dict[str, dict[str, Any]] = {
    "keep": {},
    "scalar": {"bits": 4, "group_size": 128, "scheme": "affine", "axis": -1, "scale_dtype": "float16",
               "algorithm": "rtn", "double_quant": False},
    "gguf": {"type": "Q4_K"},
    "vq": {"dim": 4, "bits_per_weight": 2, "residual_stages": 1, "row_scale": True, "n_iter": 10, "seed": 0},
    # qp.prune, then the kept values quantized (bits=None: stored as value_dtype).
    "sparse": {"prune": "magnitude", "sparsity": 0.5, "n": 2, "m": 4, "bits": 4, "group_size": 128,
               "scheme": "affine", "value_dtype": "float16"},
}
#: Tensors whose names match these (regular expressions, searched) are never quantized.
DEFAULT_SKIP = (r"norm", r"(^|\.)ln_[^.]*\.", r"bias$")
#: Token embeddings and output heads (8 bits in the 4-bit presets).
EMBED_HEAD = r"(embed|(^|\.)wte\.|word_embeddings|token_embd|lm_head|^output\.weight$)"
#: llama.cpp's Q4_K_M gives these Q6_K in some layers.
ATTN_V = r"(v_proj|attn_v|\.value\.)"
FFN_DOWN = r"(down_proj|ffn_down|\.fc2\.|mlp\.c_proj|\.w2\.)"
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blk|block|blocks)\.(\d+)\.")
#: GGUF fallbacks for rows that are not a multiple of 256 (llama.cpp's ``llama_tensor_get_type``).
GGUF_FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "IQ4_XS": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


@dataclass(frozen=True)
class Plan:
    """One tensor's method (``"keep"``, ``"scalar"``, ``"gguf"``, ``"vq"``) and parameters.

    Example:
        >>> from quantpress.recipe import Plan
        >>> Plan("scalar", {"bits": 4, "group_size": 128}).describe()
        'int4 g128 affine rtn'
    """

    method: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantpressError(f"unknown method {self.method!r}: expected one of {', '.join(METHODS)}")
        unknown = set(self.params) - set(_PARAMS[self.method])
        if unknown:
            raise QuantpressError(f"method {self.method!r} takes no parameter {sorted(unknown, key=str)[0]!r} "
                                  f"(known: {', '.join(_PARAMS[self.method]) or 'none'})")
        full = {**_PARAMS[self.method], **self.params}
        if self.method == "gguf":
            full["type"] = str(full["type"]).upper()
            if full["type"] not in GGUF_TYPES:
                raise QuantpressError(f"unknown GGUF type {full['type']!r}: expected one of {', '.join(GGUF_TYPES)}")
        object.__setattr__(self, "params", MappingProxyType(full))

    def describe(self) -> str:
        p = self.params
        if self.method == "scalar":
            g = "channel" if p["group_size"] is None else f"g{p['group_size']}"
            dq = " dq" if p["double_quant"] else ""
            if p["scheme"] == "nf4":
                return f"nf4 {g}{dq}"
            return f"int{p['bits']} {g} {p['scheme']} {p['algorithm']}{dq}"
        if self.method == "gguf":
            return str(p["type"])
        if self.method == "vq":
            return f"vq d{p['dim']} {p['bits_per_weight']}b x{p['residual_stages']}"
        if self.method == "sparse":
            pat = f"{p['n']}:{p['m']}" if p["prune"] == "nm" else f"{p['prune']} {p['sparsity']:g}"
            vals = p["value_dtype"] if p["bits"] is None else f"int{p['bits']} g{p['group_size']}"
            return f"sparse {pat} {vals}"
        return "keep"

    def with_params(self, **changes: Any) -> "Plan":
        return Plan(self.method, {**self.params, **changes})


KEEP = Plan("keep")
INT8 = Plan("scalar", {"bits": 8, "scheme": "symmetric", "group_size": None, "scale_dtype": "float32"})
INT4 = Plan("scalar", {"bits": 4, "scheme": "affine", "group_size": 128})
NF4 = Plan("scalar", {"bits": 4, "scheme": "nf4", "group_size": 64, "scale_dtype": "float32"})


@dataclass(frozen=True)
class Rule:
    """``plan`` for tensors whose name matches ``pattern`` (a glob, or a regular expression
    searched in the name when ``regex=True``); ``more_bits_layers`` restricts it to the layers
    llama.cpp's ``use_more_bits`` picks (the first and last eighth, every third in between)."""

    pattern: str
    plan: Plan
    regex: bool = False
    more_bits_layers: bool = False

    def matches(self, name: str, n_layers: int) -> bool:
        hit = re.search(self.pattern, name) is not None if self.regex else fnmatch.fnmatchcase(name, self.pattern)
        if not hit or not self.more_bits_layers:
            return hit
        m = _LAYER.search(name)
        return m is not None and use_more_bits(int(m.group(1)), n_layers)


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's ``use_more_bits(i_layer, n_layers)``."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass(frozen=True)
class Recipe:
    """Ordered rules, a default plan and the skips; :meth:`plan` picks one tensor's plan.

    Example:
        >>> from quantpress.recipe import get_recipe
        >>> r = get_recipe("int4")
        >>> r.plan("model.layers.0.mlp.up_proj.weight", (4096, 1024), "bfloat16").describe()
        'int4 g128 affine rtn'
        >>> r.plan("model.embed_tokens.weight", (32000, 1024), "bfloat16").describe()
        'int8 channel symmetric rtn'
        >>> r.plan("model.norm.weight", (1024,), "bfloat16").method
        'keep'
    """

    name: str
    rules: tuple[Rule, ...]
    default: Plan
    min_elements: int = 4096
    skip: tuple[str, ...] = DEFAULT_SKIP

    def plan(self, name: str, shape: Sequence[int], dtype: str, n_layers: int = 0) -> Plan:
        """The plan for one tensor (``n_layers``: the model's layer count, for layer rules)."""
        shape = tuple(int(s) for s in shape)
        n = 1
        for s in shape:
            n *= s
        if dtype not in ("float32", "float16", "bfloat16", "float64") or len(shape) < 2 \
                or n < self.min_elements or any(re.search(p, name) for p in self.skip):
            return KEEP
        plan = next((r.plan for r in self.rules if r.matches(name, n_layers)), self.default)
        return fit(plan, shape)

    def plan_all(self, tensors: Iterable[tuple[str, Sequence[int], str]]) -> dict[str, Plan]:
        """Plans for a whole model given ``(name, shape, dtype)`` of every tensor."""
        items = list(tensors)
        layers = [int(m.group(1)) for name, _, _ in items if (m := _LAYER.search(name))]
        n_layers = max(layers) + 1 if layers else 0
        return {name: self.plan(name, shape, dtype, n_layers) for name, shape, dtype in items}


def fit(plan: Plan, shape: tuple[int, ...]) -> Plan:
    """``plan``, or its fallback when it does not fit ``shape``: a scalar group size that does not
    divide the axis becomes per-channel; a GGUF row that is not a multiple of 256 takes
    llama.cpp's fallback type (:data:`GGUF_FALLBACK`), one not a multiple of 32 is kept; a VQ
    ``dim`` that does not divide the rows, or too few vectors for the codebook, falls back to
    int4 g128 (and on)."""
    p = plan.params
    if plan.method == "scalar":
        axis = p["axis"]
        if axis is not None and p["group_size"] is not None and shape[axis] % p["group_size"]:
            return plan.with_params(group_size=None)
        return plan
    if plan.method == "gguf":
        t = p["type"]
        while shape[-1] % GGUF_TYPES[t][0]:
            if t not in GGUF_FALLBACK:
                return KEEP
            t = GGUF_FALLBACK[t]
        return plan.with_params(type=t)
    if plan.method == "vq":
        k_bits = p["dim"] * p["bits_per_weight"] / p["residual_stages"]
        n = 1
        for s in shape:
            n *= s
        if shape[-1] % p["dim"] or n // p["dim"] < 2 ** k_bits:
            return fit(INT4, shape)
    if plan.method == "sparse" and p["prune"] == "nm" and shape[-1] % p["m"]:
        return plan.with_params(prune="magnitude", sparsity=1 - p["n"] / p["m"])
    return plan


def _preset(name: str, default: Plan, rules: Sequence[Rule] = ()) -> Recipe:
    return Recipe(name, tuple(rules), default)


_HEAD8 = Rule(EMBED_HEAD, INT8, regex=True)
PRESETS: dict[str, Recipe] = {
    "int8": _preset("int8", INT8),
    "int4": _preset("int4", INT4, [_HEAD8]),
    "nf4": _preset("nf4", NF4, [_HEAD8]),
    "q4_k": _preset("q4_k", Plan("gguf", {"type": "Q4_K"}), [Rule(r"(lm_head|^output\.weight$)", Plan("gguf", {"type": "Q6_K"}), regex=True)]),
    "q4_k_m": _preset("q4_k_m", Plan("gguf", {"type": "Q4_K"}), [
        Rule(r"(lm_head|^output\.weight$)", Plan("gguf", {"type": "Q6_K"}), regex=True),
        Rule(ATTN_V, Plan("gguf", {"type": "Q6_K"}), regex=True, more_bits_layers=True),
        Rule(FFN_DOWN, Plan("gguf", {"type": "Q6_K"}), regex=True, more_bits_layers=True),
    ]),
    "vq2": _preset("vq2", Plan("vq", {"dim": 4, "bits_per_weight": 2}), [_HEAD8]),
    "prune50-int4": _preset("prune50-int4", Plan("sparse", {"prune": "magnitude", "sparsity": 0.5, "bits": 4, "group_size": 128}), [_HEAD8]),
    "nm24-int8": _preset("nm24-int8", Plan("sparse", {"prune": "nm", "n": 2, "m": 4, "bits": 8, "group_size": 128,
                                                      "scheme": "symmetric"}), [_HEAD8]),
}


def _plan_from_spec(spec: Any, where: str) -> Plan:
    """A plan from a rule's spec: a preset name, ``"keep"``, a GGUF type name, or a mapping with
    ``method`` (a method or preset name) and parameters."""
    if isinstance(spec, str):
        spec = {"method": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("method"), str):
        raise QuantpressError(f"{where}: needs a 'method' (one of {', '.join(METHODS)}, a preset or a GGUF type)")
    params = {k: v for k, v in spec.items() if k not in ("method", "pattern", "regex")}
    m = spec["method"]
    if m in PRESETS:
        return PRESETS[m].default.with_params(**params)
    if m.upper() in GGUF_TYPES:
        return Plan("gguf", {"type": m.upper(), **params})
    try:
        return Plan(m, params)
    except QuantpressError as e:
        raise QuantpressError(f"{where}: {e}") from None


def recipe_from_dict(d: Mapping[str, Any], name: str = "custom") -> Recipe:
    """A recipe from a mapping (the layout of a TOML or YAML recipe file).

    Keys: ``base`` (a preset whose rules follow these, and whose default applies when there is
    no ``default``), ``default`` (a method spec; ``"keep"`` when neither is given),
    ``min_elements``, ``skip`` (extra regular expressions of names to keep), and ``rules``: a list
    of tables with ``pattern`` (glob) or ``regex``, ``method`` and the method's parameters.

    Example:
        >>> from quantpress.recipe import recipe_from_dict
        >>> r = recipe_from_dict({"base": "int4", "rules": [
        ...     {"pattern": "*.mlp.*", "method": "int8"},
        ...     {"regex": r"attn\\.v", "method": "gguf", "type": "Q6_K"}]})
        >>> r.plan("h.0.mlp.w", (256, 256), "float32").describe()
        'int8 channel symmetric rtn'
        >>> r.plan("h.0.attn.v.weight", (256, 256), "float32").describe()
        'Q6_K'
        >>> r.plan("h.0.attn.q.weight", (256, 256), "float32").describe()
        'int4 g128 affine rtn'
    """
    known = {"base", "default", "min_elements", "skip", "rules", "name"}
    unknown = set(d) - known
    if unknown:
        first = sorted(unknown, key=str)[0]
        raise QuantpressError(f"recipe {name!r}: unknown key {first!r} (known: {', '.join(sorted(known))})")
    base = d.get("base")
    if base is not None and (not isinstance(base, str) or base not in PRESETS):
        raise QuantpressError(f"recipe {name!r}: unknown base preset {base!r} (presets: {', '.join(PRESETS)})")
    if not isinstance(d.get("rules", []), list):
        raise QuantpressError(f"recipe {name!r}: 'rules' must be a list of tables")
    rules = []
    for i, spec in enumerate(d.get("rules", [])):
        where = f"recipe {name!r}, rule {i + 1}"
        if not isinstance(spec, Mapping) or (("pattern" in spec) == ("regex" in spec)):
            raise QuantpressError(f"{where}: give exactly one of 'pattern' (glob) or 'regex'")
        pattern = spec.get("pattern", spec.get("regex"))
        if not isinstance(pattern, str):
            raise QuantpressError(f"{where}: the pattern must be a string")
        if "regex" in spec:
            try:
                re.compile(pattern)
            except re.error as e:
                raise QuantpressError(f"{where}: bad regular expression {pattern!r} ({e})") from None
        rules.append(Rule(pattern, _plan_from_spec(spec, where), regex="regex" in spec))
    preset = PRESETS[base] if base else None
    default = _plan_from_spec(d["default"], f"recipe {name!r}, default") if "default" in d else \
        (preset.default if preset else KEEP)
    min_el = d.get("min_elements", 4096)
    skip = d.get("skip", [])
    if type(min_el) is not int or min_el < 0 or not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise QuantpressError(f"recipe {name!r}: min_elements must be a non-negative integer and skip a list of strings")
    return Recipe(str(d.get("name", name)), tuple(rules) + (preset.rules if preset else ()), default, min_el,
                  DEFAULT_SKIP + tuple(skip))


def get_recipe(recipe: Union[str, os.PathLike[str], Mapping[str, Any], Recipe]) -> Recipe:
    """A :class:`Recipe` from a preset name (:data:`PRESETS`), a ``.toml``, ``.yaml`` or ``.yml``
    file (the same keys; YAML needs ``pip install 'quantpress[yaml]'``), a mapping
    (:func:`recipe_from_dict`) or a recipe. A bad file gives a ``QuantpressError`` naming the
    file and the field.

    Example:
        >>> from quantpress.recipe import get_recipe
        >>> get_recipe("q4_k").plan("output.weight", (32000, 4096), "float16").describe()
        'Q6_K'
    """
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Mapping):
        return recipe_from_dict(recipe)
    text = os.fspath(recipe)
    if text in PRESETS:
        return PRESETS[text]
    if text.endswith((".toml", ".yaml", ".yml")):
        return _from_file(text)
    raise QuantpressError(f"unknown recipe {text!r}: give a preset ({', '.join(PRESETS)}) or a .toml/.yaml file")


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few rules; a larger file is refused before parsing


def _from_file(path: str) -> Recipe:
    """A recipe from a TOML or YAML file; every error names the file."""
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    with open(path, "rb") as f:
        raw = f.read(MAX_RECIPE_BYTES + 1)
    if len(raw) > MAX_RECIPE_BYTES:
        raise QuantpressError(f"{path}: larger than {MAX_RECIPE_BYTES} bytes, not a recipe")
    data = _parse_toml(path, raw) if path.endswith(".toml") else _parse_yaml(path, raw)
    if not isinstance(data, Mapping):
        raise QuantpressError(f"{path}: the document must be a mapping of recipe keys, not {type(data).__name__}")
    try:
        return recipe_from_dict(data, name=os.path.splitext(os.path.basename(path))[0])
    except QuantpressError as e:
        raise QuantpressError(f"{path}: {e}") from None


def _parse_toml(path: str, raw: bytes) -> Any:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise QuantpressError(f"{path}: not valid TOML ({e})") from None


def _parse_yaml(path: str, raw: bytes) -> Any:
    """``yaml.safe_load``: plain data only; tags such as ``!!python/object`` are refused."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        raise QuantpressError(f"{path}: reading a YAML recipe needs PyYAML: pip install 'quantpress[yaml]'") from None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise QuantpressError(f"{path}: not valid YAML ({e})") from None
