"""Quantize seconds per layer by compute dtype: `python -m benchmarks.bench_dtype --out DIR [--layers 2]`.

The stand-in's own quantize settings (configs/standin.yaml: 4-bit g64 asym, clipping search, 128 x 512 calibration
tokens, 8 per forward pass) on its first LAYERS decoder layers (a truncated copy of the stand-in, so that the slow
dtypes finish), once per compute dtype, side by side in one run, each in its own process. Per row: the seconds of the
first layer (it includes capturing the layer inputs), the mean of the later ones, the whole stage, and what
compute_dtype: auto picks on this machine (tulu_quant.hardware). The first call of the matmul probe below the table
shows the cause: a bfloat16 or float16 matmul without native instructions is emulated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import ROOT, load_average, machine

DTYPES = ("float32", "bfloat16", "float16")


def truncated_standin(out: Path, layers: int) -> Path:
    """The stand-in's first `layers` decoder layers with its embeddings, norm and tokenizer (a real model's widths)."""
    from tulu_quant.checkpoint import TOKENIZER_FILES, SafetensorsWriter, copy_if_present, open_checkpoint
    from tulu_quant.config import StandinConfig
    from tulu_quant.stages.standin import converted_model

    source, _ = converted_model(StandinConfig())
    if (out / "config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    ckpt = open_checkpoint(source)
    keep = [n for n in ckpt.tensors if not n.startswith("model.layers.") or int(n.split(".")[2]) < layers]
    writer = SafetensorsWriter(
        out / "model.safetensors", [(n, ckpt.tensors[n].dtype, ckpt.tensors[n].shape) for n in keep]
    )
    with ckpt.reader() as get:
        for name in keep:
            writer.write(name, get(name))
    writer.close()
    config = json.loads((source / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}, indent=2))
    copy_if_present(source, out, [*TOKENIZER_FILES, "generation_config.json"])
    return out


def run_row(dtype: str, model: Path, out: Path) -> dict[str, Any]:
    """Quantize `model` with the stand-in's settings in `dtype`; the layer times come from GPTQModel's callback."""
    from tulu_quant.config import load_config
    from tulu_quant.stages import calibrate, quantize

    stamps: list[float] = []
    original = quantize.LayerProgress.layer_complete

    def timed(self, layer_idx, submodule_finalized):
        if not submodule_finalized:
            stamps.append(time.perf_counter())
        return original(self, layer_idx, submodule_finalized)

    quantize.LayerProgress.layer_complete = timed
    cfg = load_config(ROOT / "configs" / "standin.yaml", {"quantize.compute_dtype": dtype})
    calibrate.run(cfg, model, out / "calib")  # the same samples for every row (reused once built)
    start = time.perf_counter()
    result = quantize.run(cfg, model, out / "gptq" / dtype, out / "calib", True, log_file=out / f"{dtype}.log")
    layers = [b - a for a, b in zip([start, *stamps], stamps)]
    return {
        "dtype": dtype,
        "layer_seconds": [round(s, 2) for s in layers],
        "stage_seconds": round(result.seconds, 2),
        "peak_rss": result.peak_rss,
        "compute_dtype_reason": result.compute_dtype_reason,
    }


def matmul_probe() -> dict[str, float]:
    """Milliseconds of the 4096x576 @ 576x1536 matmul of a stand-in MLP projection, in each dtype (best of 3)."""
    import torch

    a, b = torch.randn(4096, 576), torch.randn(576, 1536)
    times = {}
    for dtype in DTYPES:
        x, y = a.to(getattr(torch, dtype)), b.to(getattr(torch, dtype))
        x @ y
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            x @ y
            best = min(best, time.perf_counter() - t)
        times[dtype] = round(best * 1000, 1)
    return times


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| compute dtype | first layer | later layers (mean) | whole stage (with load and save) | "
        "later layers vs float32 |",
        "| --- | --- | --- | --- | --- |",
    ]
    base = next(r for r in result["rows"] if r["dtype"] == "float32")

    def later(r):
        return sum(r["layer_seconds"][1:]) / max(len(r["layer_seconds"]) - 1, 1)

    for r in result["rows"]:
        auto = " (auto here)" if r["dtype"] == result["auto"] else ""
        rows.append(
            f"| {r['dtype']}{auto} | {r['layer_seconds'][0]:.1f} s | {later(r):.1f} s | {r['stage_seconds']:.0f} s "
            f"| {later(r) / later(base):.1f}x |"
        )
    probe = ", ".join(f"{d} {ms:.0f} ms" for d, ms in result["matmul_ms"].items())
    return f"""\
Command: `{result["command"]}`. Machine: {result["machine"]}; load average {result["load_before"]} before,
{result["load_after"]} after. The stand-in's quantize settings (configs/standin.yaml) on its first {result["layers"]}
decoder layers, 128 x 512 calibration tokens, 8 per forward pass. `compute_dtype: auto` picks **{result["auto"]}** here:
{result["auto_reason"]}.

{chr(10).join(rows)}

The cause, one 4096x576 @ 576x1536 matmul (a stand-in MLP projection over a calibration batch): {probe}.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_dtype", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/dtype"))
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: measure one row in this process
    args = parser.parse_args(argv)
    out = args.out.resolve()
    model = truncated_standin(out / "model", args.layers)
    if args.row:
        (out / "rows").mkdir(parents=True, exist_ok=True)
        (out / "rows" / f"{args.row}.json").write_text(json.dumps(run_row(args.row, model, out), indent=2))
        return 0
    from tulu_quant.hardware import cpu_compute_dtype

    auto, reason = cpu_compute_dtype()
    before = load_average()
    for dtype in args.dtypes:
        row = out / "rows" / f"{dtype}.json"
        if not row.is_file():
            cmd = [sys.executable, "-m", "benchmarks.bench_dtype", "--out", str(out), "--layers", str(args.layers)]
            subprocess.run([*cmd, "--row", dtype], check=True, cwd=ROOT)
    result = {
        "command": "python -m benchmarks.bench dtype",
        "machine": machine(),
        "layers": args.layers,
        "auto": auto,
        "auto_reason": reason,
        "load_before": before,
        "load_after": load_average(),
        "rows": [json.loads((out / "rows" / f"{d}.json").read_text()) for d in args.dtypes],
        "matmul_ms": matmul_probe(),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
