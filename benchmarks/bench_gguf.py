"""`python -m benchmarks.bench_gguf --out DIR --run-dir RUN`: GGUF against our other 4-bit artifacts, in one run.

From a finished stand-in run (recovered/, calib/, gptq/, onnx/):

1. Exports with `tulu-quant export-gguf` as a user runs it: Q4_K_M, Q5_K_M, Q8_0 and Q4_0 with the importance matrix of
   the run's calibration samples, and Q4_K_M and Q4_0 without it. Export time and peak RSS come from each export's
   gguf.json (the stage measures them).
2. Quality: `tulu-quant validate --suite perplexity` with the fp16 model as the reference and every GGUF file, the GPTQ
   checkpoint and the int4 ONNX export as candidates: wiki and Shakespeare perplexity, KL divergence and top-1
   agreement, computed by the validation protocol the same way for every artifact; bits per weight = file bytes x 8 /
   the model's parameters.
3. Speed on THREADS threads, 128 greedy tokens after the same chat prompt (benchmarks.bench_onnx.decode_speed: a
   warm-up, then the median of REPEATS runs of time to first token and decode tokens/s as tulu_quant.generate defines
   them): llama.cpp Q4_K_M and Q4_0, the int4 ONNX export (onnxruntime-genai), torch fp32.

Results: OUT/bench.json and OUT/bench.md; finished steps are reused when present (--force redoes them).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .bench_onnx import REPEATS, THREADS, machine_meta, measured_rows
from .common import ROOT, load_average, tool

log = logging.getLogger("benchmarks.bench_gguf")

WITH_MATRIX = ("Q4_K_M", "Q5_K_M", "Q8_0", "Q4_0")
WITHOUT_MATRIX = ("Q4_K_M", "Q4_0")
SPEED_ROWS = ("Q4_K_M", "Q4_0")
CONFIG = ROOT / "configs" / "standin.yaml"
GATES = "validate.gates=[{metric: 'ppl.*', max_increase_pct: 100, outside_noise_only: false}]"


def export(run_dir: Path, out: Path, types: tuple[str, ...], imatrix: bool, force: bool) -> dict[str, Any]:
    if not (out / "gguf.json").is_file() or force:
        cmd = tool(
            "export-gguf",
            "--config",
            str(CONFIG),
            "--model",
            str(run_dir / "recovered"),
            "--out",
            str(out),
            "--threads",
            str(THREADS),
            *[arg for t in types for arg in ("--type", t)],
            *(["--calib", str(run_dir / "calib")] if imatrix else ["--no-imatrix"]),
            "--force",
        )
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return json.loads((out / "gguf.json").read_text())


def quality(run_dir: Path, candidates: list[Path], report: Path, force: bool) -> dict[str, Any]:
    if not (report / "report.json").is_file() or force:
        cmd = tool(
            "validate",
            "--config",
            str(CONFIG),
            "--suite",
            "perplexity",
            "--reference",
            str(run_dir / "recovered"),
            *[arg for c in candidates for arg in ("--candidate", str(c))],
            "--report",
            str(report),
            "--set",
            GATES,
            "--force",
        )
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return json.loads((report / "report.json").read_text())


def parameters(model_dir: Path) -> int:
    from tulu_quant.checkpoint import open_checkpoint

    return sum(t.numel for t in open_checkpoint(model_dir).tensors.values())


def quality_rows(report: dict[str, Any], labels: dict[str, str], params: int) -> list[dict[str, Any]]:
    from tulu_quant.checkpoint import dir_size

    ref = report["reference"]["metrics"]
    rows = [
        {
            "name": "fp16 (reference)",
            "bpw": round(8 * dir_size(Path(report["reference"]["path"])) / params, 2),
            "wiki": ref["ppl.wiki"]["value"],
            "shakespeare": ref["ppl.shakespeare"]["value"],
        }
    ]
    for cand in report["candidates"]:
        m = cand["metrics"]
        rows.append(
            {
                "name": labels[cand["path"]],
                "path": cand["path"],
                "bpw": round(8 * cand["info"]["size_bytes"] / params, 2),
                "wiki": m["ppl.wiki"]["value"],
                "shakespeare": m["ppl.shakespeare"]["value"],
                "wiki_ratio": round(m["ppl.wiki"]["value"] / ref["ppl.wiki"]["value"], 4),
                "shakespeare_ratio": round(m["ppl.shakespeare"]["value"] / ref["ppl.shakespeare"]["value"], 4),
                "kl_mean": m["kl_mean"]["value"],
                "top1": m["top1_agreement"]["value"],
            }
        )
    return rows


def markdown(meta: dict[str, Any], quality: list[dict[str, Any]], speed: list[dict[str, Any]], exports) -> str:
    lines = [
        f"Command: `{meta['command']}` on a finished `make quantize` run (configs/standin.yaml).",
        f"Machine: {meta['machine']['line']}; load average {meta['load_before']} before, {meta['load_after']} after.",
        "",
        "Quality: `tulu-quant validate --suite perplexity` (24 wiki windows x 512 tokens of the evaluation split, 8 of "
        "Shakespeare; KL divergence and top-1 agreement against fp16 on 24 wiki windows), every artifact scored the "
        "same way. Ratios are perplexity / fp16's. bpw: bytes on disk x 8 / parameters.",
        "",
        "| artifact | bits per weight | wiki ppl | ratio | Shakespeare ppl | ratio | KL | top-1 % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in quality:
        lines.append(
            f"| {r['name']} | {r['bpw']:.2f} | {r['wiki']:.2f} | {r.get('wiki_ratio', 1.0):.3f} | "
            f"{r['shakespeare']:.2f} | {r.get('shakespeare_ratio', 1.0):.3f} | "
            f"{r['kl_mean'] if 'kl_mean' in r else 0:.4f} | {r.get('top1', 100.0):.1f} |"
        )
    lines += [
        "",
        f"Speed: {THREADS} threads, {meta['new_tokens']} greedy tokens after the same chat prompt "
        f"({meta['prompt_tokens']} tokens), median of {REPEATS} runs after a warm-up; ratios against llama.cpp Q4_K_M.",
        "",
        "| runtime | time to first token (ms) | decode tokens/s | vs llama.cpp Q4_K_M |",
        "| --- | --- | --- | --- |",
    ]
    base = next(r for r in speed if r["name"].startswith("llama.cpp Q4_K_M"))["decode_tokens_per_s"]
    for r in speed:
        lines.append(
            f"| {r['name']} | {r['ttft_ms']:.0f} | {r['decode_tokens_per_s']:.1f} | "
            f"{r['decode_tokens_per_s'] / base:.2f}x |"
        )
    lines += ["", "Export (`tulu-quant export-gguf`, the stand-in, 2 threads):", ""]
    for name, record in exports.items():
        matrix = record.get("imatrix")
        per_file = ", ".join(f"{f['type']} {f['seconds']:.1f} s" for f in record["files"])
        lines.append(
            f"- {name}: {record['seconds']:.0f} s in all, peak RSS {record['peak_rss'] / 2**30:.2f} GiB; convert "
            f"{record['convert_seconds']:.1f} s"
            + (
                f", importance matrix {matrix['seconds']:.0f} s ({matrix['samples']} x {matrix['seq_len']} tokens)"
                if matrix
                else ""
            )
            + f"; quantize + verify per file: {per_file}."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_gguf", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "standin")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--new-tokens", type=int, default=128, help="greedy tokens timed per row (protocol: 128)")
    args = parser.parse_args(argv)
    from tulu_quant.chat import resolve_format
    from tulu_quant.progress import setup_logging

    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging(log_file=args.out / "bench.log")
    run_dir, start, load_before = args.run_dir.resolve(), time.perf_counter(), load_average()
    exports = {
        "with our importance matrix": export(run_dir, args.out / "with-imatrix", WITH_MATRIX, True, args.force),
        "without": export(run_dir, args.out / "without-imatrix", WITHOUT_MATRIX, False, args.force),
    }
    labels = {
        str(run_dir / "gptq"): "GPTQ 4-bit (the stand-in default)",
        str(run_dir / "onnx"): "int4 ONNX (from GPTQ)",
    }
    for record in exports.values():
        for f in record["files"]:
            matrix = "imatrix" if f["imatrix"] else ("no imatrix" if f["type"] in WITHOUT_MATRIX else "")
            labels[str(Path(record["out"]) / f["file"])] = f"GGUF {f['type']}" + (f" ({matrix})" if matrix else "")
    candidates = [Path(p) for p in labels if Path(p).exists()]
    report = quality(run_dir, candidates, args.out / "report", args.force)
    rows = quality_rows(report, labels, parameters(run_dir / "recovered"))

    from transformers import AutoTokenizer

    chat_format = resolve_format("auto", AutoTokenizer.from_pretrained(run_dir / "recovered"))
    with_dir = Path(exports["with our importance matrix"]["out"])
    plan = [
        *[(f"llama.cpp {t} (imatrix, llama-cpp-python)", next(with_dir.glob(f"*-{t}.gguf"))) for t in SPEED_ROWS],
        ("int4 ONNX from GPTQ (onnxruntime-genai)", run_dir / "onnx"),
        ("torch fp32 (fp16 weights)", run_dir / "recovered"),
    ]
    import torch

    torch.set_num_threads(THREADS)
    speed = measured_rows([(name, path, False) for name, path in plan], chat_format, args)
    meta = {
        "command": "python -m benchmarks.bench_gguf " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_meta(),
        "new_tokens": args.new_tokens,
        "prompt_tokens": speed[0]["prompt_tokens"],
        "load_before": load_before,
        "load_after": load_average(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (args.out / "bench.json").write_text(
        json.dumps({"meta": meta, "quality": rows, "speed": speed, "exports": exports}, indent=2)
    )
    text = markdown(meta, rows, speed, exports)
    (args.out / "bench.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
