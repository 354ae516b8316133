"""The ``quantpress`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

import numpy as np

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from . import __version__, get_num_threads, set_num_threads, simd_level
from ._core import QuantpressError
from .demo import compare_methods, example_weights


def _demo(args: argparse.Namespace, console: Console) -> int:
    matrix_flags = [f"--{k}" for k in ("rows", "cols", "repeats", "seed") if getattr(args, k) is not None]
    if args.matrix:
        return _demo_matrix(args, console)
    if matrix_flags:
        console.print(f"[red]error:[/red] {matrix_flags[0]} applies to the weight-matrix demo: add --matrix")
        return 2
    if args.threads:
        set_num_threads(args.threads)
    from .demo import compare_recipes

    console.print(f"quantpress {__version__}: the built-in digits MLP (64-256-128-10, float32) compressed with "
                  f"each recipe; accuracy on 450 test images")
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("compressing", total=None)

        def tick(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        rows = compare_recipes(target_bpw=args.target_bpw, progress=tick)
    table = Table(title="digits MLP compressed (bits/weight: tensor data; error: mean over the weight matrices)")
    for col in ("recipe", "file KB", "bits/weight", "rel. error", "accuracy %"):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    table.add_column("fc1 / fc2 / fc3", no_wrap=True)
    for r in rows:
        methods = " / ".join(m.replace(" symmetric", " sym").replace(" affine", "").replace(" rtn", "")
                             for n, m in sorted(r.methods.items()) if n.endswith(".weight"))
        table.add_row(r.name, f"{r.file_bytes / 1000:.1f}", f"{r.bits_per_weight:.3f}", f"{r.rel_error:.2e}",
                      f"{r.accuracy:.2f}", methods)
    console.print(table)
    # Then every quantization method on one weight matrix, with its error and speed (a quick
    # size; `demo --matrix` runs the full one).
    args.rows, args.cols, args.repeats, args.seed = 256, 4096, 1, 0
    return _demo_matrix(args, console)


def _demo_matrix(args: argparse.Namespace, console: Console) -> int:
    args.rows = 1024 if args.rows is None else args.rows
    args.cols = 4096 if args.cols is None else args.cols
    args.repeats = 3 if args.repeats is None else args.repeats
    args.seed = 0 if args.seed is None else args.seed
    if args.cols < 256 or args.cols % 256 or args.rows < 1:
        console.print("[red]error:[/red] --cols must be a positive multiple of 256 and --rows positive")
        return 2
    if args.threads:
        set_num_threads(args.threads)
    w = example_weights(args.rows, args.cols, args.seed)
    console.print(
        f"quantpress {__version__}: built-in weight matrix {w.shape[0]}x{w.shape[1]} float32 "
        f"({w.nbytes / 2**20:.0f} MiB, Student-t with outlier columns), "
        f"SIMD {simd_level()}, {get_num_threads()} threads"
    )
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("quantizing", total=None)

        def tick(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        results = compare_methods(w, repeats=args.repeats, progress=tick)
    table = Table(title="Quantization methods on the built-in matrix (speed: GB/s of float32)")
    for col in ("method", "bits/weight", "RMSE", "max |err|", "SQNR dB", "quantize GB/s", "dequantize GB/s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in results:
        table.add_row(r.name, f"{r.bits_per_weight:.3f}", f"{r.rmse:.3e}", f"{r.max_abs_error:.3e}",
                      f"{r.sqnr_db:.1f}", f"{r.quantize_gbps:.2f}", f"{r.dequantize_gbps:.2f}")
    console.print(table)
    return 0


def _info(args: argparse.Namespace, console: Console) -> int:
    from . import _core

    console.print(f"quantpress {__version__}")
    console.print(f"SIMD level: {simd_level()} (detected: {_core.detected_simd_level()})")
    console.print(f"threads: {get_num_threads()}")
    return 0


def _compress(args: argparse.Namespace, console: Console) -> int:
    from .pipeline import compress

    if args.threads:
        set_num_threads(args.threads)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("compressing", total=None)

        def tick(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name[-40:])

        report = compress(args.input, args.output, recipe=args.recipe, progress=tick, target_bpw=args.target_bpw,
                          max_shard_size=args.max_shard_size, executor=args.executor, ray_address=args.address)
    how = f"recipe {args.recipe or 'int4'}" if args.target_bpw is None else f"budget {args.target_bpw:g} bits/weight"
    table = Table(title=f"{args.input} -> {args.output} ({how})")
    for col in ("tensor", "method", "shape", "bits/weight", "rel. error", "SQNR dB"):
        table.add_column(col, justify="left" if col in ("tensor", "method") else "right")
    for t in report.tensors:
        table.add_row(t.name, t.method, "x".join(map(str, t.shape)), f"{t.bits_per_weight:.3f}",
                      f"{t.rel_error:.2e}", f"{t.sqnr_db:.1f}")
    console.print(table)
    console.print(f"{report.input_bytes / 1e6:.1f} MB -> {report.output_bytes / 1e6:.1f} MB, "
                  f"{report.bits_per_weight:.3f} bits/weight, {report.seconds:.2f} s ({report.gbps:.2f} GB/s)")
    return 0


def _inspect(args: argparse.Namespace, console: Console) -> int:
    from .container import load

    c = load(args.file)
    kind = "quantpress container (format 1)" if c.is_container else "plain safetensors"  # type: ignore[attr-defined]
    console.print(f"{args.file}: {kind}, {len(c)} tensors", soft_wrap=True)
    table = Table()
    for col in ("tensor", "method", "params", "shape", "dtype", "bytes", "bits/weight"):
        table.add_column(col, justify="right" if col in ("bytes", "bits/weight") else "left")
    total = elements = 0
    for name in c:
        i = c.info(name)  # type: ignore[attr-defined]
        params = " ".join(f"{k}={v}" for k, v in i["params"].items())
        table.add_row(name, i["method"], params, "x".join(map(str, i["shape"])), i["dtype"],
                      str(i["nbytes"]), f"{i['bits_per_weight']:.3f}")
        total += i["nbytes"]
        elements += max(1, int(np.prod(i["shape"])))
    console.print(table)
    console.print(f"{total} bytes of tensors, {total * 8 / max(1, elements):.3f} bits/weight overall")
    return 0


def _eval(args: argparse.Namespace, console: Console) -> int:
    from .pipeline import evaluate

    rows = evaluate(args.original, args.compressed)
    if args.plot:
        _plot(args, rows, console)
    if args.json:
        print(json.dumps({"tensors": rows}, indent=1))
        return 0
    table = Table(title=f"{args.compressed} against {args.original}")
    for col in ("tensor", "method", "rel. error", "SQNR dB", "cosine"):
        table.add_column(col, justify="left" if col in ("tensor", "method") else "right")
    for r in rows:
        sqnr = "exact" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}"
        table.add_row(r["name"], r["method"], f"{r['rel_error']:.2e}", sqnr, f"{r['cosine']:.6f}")
    console.print(table)
    return 0


def _onnx_quantize(args: argparse.Namespace, console: Console) -> int:
    from .formats.onnx_write import onnx_quantize

    group = args.group_size if args.group_size in (None, "channel") else int(args.group_size)
    report = onnx_quantize(args.input, args.output, bits=args.bits, group_size=group, op=args.op,
                           scheme=args.scheme, min_elements=args.min_elements)
    table = Table(title=f"{args.input} -> {args.output} ({args.op}, {args.bits} bits)")
    for col in ("weight", "shape", "group", "scheme", "bytes", "rel. error"):
        table.add_column(col, justify="left" if col in ("weight", "scheme") else "right")
    for t in report.tensors:
        table.add_row(t.name, "x".join(map(str, t.shape)), str(t.group_size or "channel"), t.scheme,
                      f"{t.input_bytes} -> {t.output_bytes}", f"{t.rel_error:.2e}")
    console.print(table)
    for name, why in report.skipped:
        console.print(f"kept float: {name} ({why})")
    console.print(f"{report.input_bytes / 1e6:.2f} MB -> {report.output_bytes / 1e6:.2f} MB in {report.seconds:.2f} s")
    return 0


def _gguf_export(args: argparse.Namespace, console: Console) -> int:
    from .formats.gguf_export import gguf_export

    meta = {}
    for kv in args.meta or ():
        key, sep, value = kv.partition("=")
        if not sep:
            raise QuantpressError(f"--meta {kv!r}: expected KEY=VALUE")
        meta[key] = value
    report = gguf_export(args.input, args.output, args.type, arch=args.arch, metadata=meta)
    table = Table(title=f"{args.input} -> {args.output} ({report.qtype})")
    for col in ("tensor", "shape", "type", "bytes"):
        table.add_column(col, justify="left" if col in ("tensor", "type") else "right")
    for t in report.tensors:
        dst = t.dst_type + (" (fallback)" if t.fallback else "")
        table.add_row(escape(t.name), "x".join(map(str, t.shape)), f"{t.src_type} -> {dst}", f"{t.src_bytes} -> {t.dst_bytes}")
    console.print(table)
    console.print(f"{report.src_bytes / 1e6:.2f} MB -> {report.dst_bytes / 1e6:.2f} MB in {report.seconds:.2f} s")
    return 0


def _plot(args: argparse.Namespace, rows: list[dict[str, Any]], console: Console) -> None:
    """Scatter of each tensor's relative error (log scale) against its stored bits per weight,
    one colour per method; exact (kept) tensors are counted in the title, not drawn."""
    from .container import load

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise QuantpressError("--plot needs matplotlib: pip install 'quantpress[plot]' (or pip install matplotlib)") from None
    c = load(args.compressed)
    pts = [(c.info(r["name"])["bits_per_weight"], r["rel_error"], r["method"], r["name"])  # type: ignore[attr-defined]
           for r in rows if r["rel_error"] > 0]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    for method in sorted({p[2] for p in pts}):
        sel = [p for p in pts if p[2] == method]
        ax.scatter([p[0] for p in sel], [p[1] for p in sel], label=method, s=28, alpha=0.8)
    if len(pts) <= 40:
        for bpw, err, _, name in pts:
            ax.annotate(name, (bpw, err), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("stored bits per weight")
    ax.set_ylabel("relative error ||W - W_hat|| / ||W||")
    ax.set_title(f"{os.path.basename(args.compressed)}: {len(pts)} compressed tensors "
                 f"({len(rows) - len(pts)} exact, not drawn)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if pts:
        ax.legend(fontsize=8, title="method")
    fig.tight_layout()
    fig.savefig(args.plot)
    plt.close(fig)
    console.print(f"wrote {args.plot}", soft_wrap=True)


def _add_model_commands(sub: Any) -> None:
    oq = sub.add_parser("onnx-quantize", help="quantize the MatMul/Gemm weights of an ONNX model (weight only)")
    oq.add_argument("input", help="input .onnx model")
    oq.add_argument("-o", "--output", required=True, help="output .onnx model")
    oq.add_argument("--bits", type=int, default=8, choices=(4, 8))
    oq.add_argument("--op", default="dequantize_linear", choices=("dequantize_linear", "matmul_nbits"))
    oq.add_argument("--group-size", default=None, help="K values per scale or 'channel' (default: per channel for int8 DequantizeLinear, else 128)")
    oq.add_argument("--scheme", default=None, choices=("affine", "symmetric"))
    oq.add_argument("--min-elements", type=int, default=4096, help="smaller weights stay float (default 4096)")
    oq.set_defaults(run=_onnx_quantize)
    ge = sub.add_parser("gguf-export", help="write a model's tensors to a GGUF file in a GGUF block type")
    ge.add_argument("input", help="input model: safetensors (or sharded set/directory), torch, npz or GGUF")
    ge.add_argument("-o", "--output", required=True, help="output .gguf")
    ge.add_argument("--type", default="Q8_0", help="Q8_0, Q4_K, ..., Q4_K_M, Q5_K_M, F16 or F32 (default Q8_0)")
    ge.add_argument("--arch", default=None, help="general.architecture (default quantpress)")
    ge.add_argument("--meta", action="append", metavar="KEY=VALUE", help="extra string metadata (repeatable)")
    ge.set_defaults(run=_gguf_export)
    comp = sub.add_parser("compress", help="compress a model into a quantpress container")
    comp.add_argument("input", help="input model: a file, a directory, an index or a GGUF split")
    comp.add_argument("-o", "--output", required=True, help="output container (.safetensors)")
    how = comp.add_mutually_exclusive_group()
    how.add_argument("--recipe", default=None, help="int8, int4, nf4, q4_k, q4_k_m, vq2 or a .toml/.yaml file (default int4)")
    how.add_argument("--target-bpw", type=float, default=None,
                     help="instead of a recipe: a size budget in bits per weight; each tensor gets the method "
                          "that minimises the total squared error within it")
    comp.add_argument("--threads", type=int, default=0, help="worker threads (default: all CPUs)")
    comp.add_argument("--max-shard-size", default=None, metavar="SIZE",
                      help="write OUTPUT as a directory of shards of at most SIZE (500MB, 2GB, 2GiB) plus an index")
    comp.add_argument("--executor", default="local", choices=("local", "ray"),
                      help="local (this process) or ray: tensors compressed as Ray tasks, same output bytes")
    comp.add_argument("--address", default=None, metavar="ADDR",
                      help="--executor ray: the Ray cluster address (default: a running one, else a local instance)")
    comp.set_defaults(run=_compress)
    insp = sub.add_parser("inspect", help="list the tensors, methods and sizes of a container or safetensors file")
    insp.add_argument("file")
    insp.set_defaults(run=_inspect)
    ev = sub.add_parser("eval", help="per-tensor error of a compressed model against the original")
    ev.add_argument("original")
    ev.add_argument("compressed")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.add_argument("--plot", metavar="FILE.png", help="also draw per-tensor error against bits per weight "
                    "(needs matplotlib: pip install 'quantpress[plot]')")
    ev.set_defaults(run=_eval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantpress", description="Compress AI models.")
    parser.add_argument("--version", action="version", version=f"quantpress {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compress a built-in digits MLP with several recipes: size, error, accuracy")
    demo.add_argument("--target-bpw", type=float, default=3.0, help="the size-budget row's bits per weight (default 3)")
    demo.add_argument("--matrix", action="store_true",
                      help="instead: compare every quantization method on a built-in weight matrix (size, error, speed)")
    demo.add_argument("--rows", type=int, default=None, help="--matrix: rows of the example matrix (default 1024)")
    demo.add_argument("--cols", type=int, default=None, help="--matrix: columns, a multiple of 256 (default 4096)")
    demo.add_argument("--seed", type=int, default=None, help="--matrix: random seed (default 0)")
    demo.add_argument("--threads", type=int, default=0, help="worker threads (default: all CPUs)")
    demo.add_argument("--repeats", type=int, default=None, help="--matrix: timing repetitions, best kept (default 3)")
    demo.set_defaults(run=_demo)
    info = sub.add_parser("info", help="version, SIMD level and threads")
    info.set_defaults(run=_info)
    _add_model_commands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=130)
    try:
        return int(args.run(args, console))
    except ValueError as e:  # QuantpressError is a ValueError
        console.print(f"[red]error:[/red] {escape(str(e))}")
        return 1
    except FileNotFoundError as e:
        console.print(f"[red]error:[/red] no such file: {e.filename or e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
