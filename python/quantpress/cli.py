"""The ``quantpress`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from . import __version__, get_num_threads, set_num_threads, simd_level
from .demo import compare_methods, example_weights


def _demo(args: argparse.Namespace, console: Console) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantpress", description="Compress AI models.")
    parser.add_argument("--version", action="version", version=f"quantpress {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compare the quantization methods on a built-in weight matrix")
    demo.add_argument("--rows", type=int, default=1024, help="rows of the example matrix (default 1024)")
    demo.add_argument("--cols", type=int, default=4096, help="columns, a multiple of 256 (default 4096)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=0, help="worker threads (default: all CPUs)")
    demo.add_argument("--repeats", type=int, default=3, help="timing repetitions (best kept)")
    demo.set_defaults(run=_demo)
    info = sub.add_parser("info", help="version, SIMD level and threads")
    info.set_defaults(run=_info)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=130)
    try:
        return int(args.run(args, console))
    except ValueError as e:  # QuantpressError is a ValueError
        console.print(f"[red]error:[/red] {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
