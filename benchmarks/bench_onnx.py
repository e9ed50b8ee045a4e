"""`python -m benchmarks.bench_onnx --out DIR`: the CPU paths side by side, in one run (docs/onnx.md).

Rows: torch fp32 (the fp16 model computed in float32), our GPTQ checkpoint through transformers, int4 ONNX from the
GPTQ checkpoint, int4 ONNX from fp16 (k-quant and RTN, the builder's quantizer), fp32 ONNX. For each:

- decode speed on THREADS threads: a warm-up generation, then REPEATS times NEW_TOKENS greedy tokens after a chat
  prompt; the medians of time to first token and decode tokens/s as defined in tulu_quant.generate (the numbers
  `tulu-quant generate` prints);
- wiki perplexity (the reference protocol, docs/standin.md: WINDOWS non-overlapping windows of WINDOW_TOKENS tokens
  of the evaluation half of the wiki text, tulu_quant.eval.perplexity), computed by the row's own runtime:
  onnxruntime for the ONNX rows;
- size on disk of the weights.

Inputs come from a run directory's manifest (recover and quantize outputs) or --model/--gptq. Exports are written
under OUT/exports and each finished row under OUT/rows; both are reused when present (--force redoes them), so an
interrupted run resumes. Results: OUT/bench.json and OUT/bench.md; the builder's console output goes to OUT/bench.log.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .common import load_average, machine, machine_record

log = logging.getLogger("benchmarks.bench_onnx")

THREADS = 2
NEW_TOKENS = 128
WINDOWS = 24
WINDOW_TOKENS = 512
WARMUP_TOKENS = 8
REPEATS = 3  # timed generations per row; the median is reported (the machine may be shared)
PROMPT = "Tell me a long story about a river, an old stone bridge and the market of a small town."
# ONNX rows: name -> (ExportOnnxConfig values, exported from the GPTQ checkpoint)
EXPORTS = {
    "int4 ONNX from GPTQ": ({"precision": "int4", "from_gptq": True}, True),
    # accuracy_level 1 (fp32 compute) instead of the default int8 compute: the compute type export_onnx picks for CPUs.
    "int4 ONNX from GPTQ, fp32 compute": ({"precision": "int4", "from_gptq": True, "accuracy_level": 1}, True),
    "int4 ONNX from fp16, k-quant": ({"precision": "int4", "from_gptq": False, "algorithm": "k_quant"}, False),
    "int4 ONNX from fp16, RTN": ({"precision": "int4", "from_gptq": False, "algorithm": "rtn"}, False),
    "fp32 ONNX": ({"precision": "fp32", "from_gptq": False}, False),
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def machine_meta() -> dict[str, Any]:
    from tulu_quant.manifest import library_versions

    return {**machine_record(), "line": machine(), "threads": THREADS, "versions": library_versions()}


def resolve_inputs(args) -> tuple[Path, Path | None]:
    if args.model:
        return args.model, args.gptq
    from tulu_quant.manifest import Manifest

    manifest = Manifest.load(args.run_dir)
    model, gptq = manifest.output_dir("recover"), manifest.output_dir("quantize")
    if model is None or not model.exists():
        raise FileNotFoundError(
            f"{args.run_dir}: no recovered model in its manifest; run the pipeline first or pass --model."
        )
    return model, args.gptq or gptq


# ------------------------------------------------------------------------------------------------------ measurements


def decode_speed(backend, chat_format: str, new_tokens: int) -> dict[str, Any]:
    from tulu_quant.chat import prompt_ids
    from tulu_quant.config import GenerationSettings
    from tulu_quant.generate import timed_generate

    ids = prompt_ids(backend.tokenizer, [{"role": "user", "content": PROMPT}], chat_format)
    backend.generate(ids, GenerationSettings(max_new_tokens=WARMUP_TOKENS))
    runs = [timed_generate(backend, ids, GenerationSettings(max_new_tokens=new_tokens)) for _ in range(REPEATS)]
    ttft = statistics.median(t.ttft_s for _, t in runs)
    rate = statistics.median(t.decode_tokens_per_s for _, t in runs)
    return {
        "prompt_tokens": len(ids),
        "new_tokens": len(runs[0][0]),
        "ttft_ms": round(ttft * 1000, 1),
        "decode_tokens_per_s": round(rate, 1),
        "decode_runs": [round(t.decode_tokens_per_s, 1) for _, t in runs],
    }


def wiki_perplexity(backend, windows: int, window_tokens: int) -> dict[str, Any]:
    import numpy as np

    from tulu_quant.data import get_source
    from tulu_quant.eval.perplexity import bos_id_of, make_windows, score_windows, tokenize_documents

    ids = tokenize_documents(backend.tokenizer, get_source("wiki").documents("evaluation"))
    cut = make_windows(ids, window_tokens, bos_id_of(backend.tokenizer), windows)
    start = time.perf_counter()
    nll = score_windows(backend, cut)
    return {
        "wiki_ppl": round(float(np.exp(nll.mean())), 3),
        "ppl_windows": len(cut.inputs),
        "ppl_tokens": len(cut.inputs) * cut.scored_per_window,
        "ppl_seconds": round(time.perf_counter() - start, 1),
    }


def measure(name: str, path: Path, chat_format: str, perplexity: bool, args) -> dict[str, Any]:
    from tulu_quant.generate import load

    log.info("measuring %s (%s)", name, path)
    backend = load(path, device="cpu", threads=THREADS)
    row = {
        "name": name,
        "path": str(path),
        "kind": backend.kind,
        "size_bytes": backend.size_bytes(),
        **decode_speed(backend, chat_format, args.new_tokens),
    }
    if perplexity:
        row.update(wiki_perplexity(backend, args.windows, args.window_tokens))
    log.info("%s: %s", name, {k: v for k, v in row.items() if k not in ("name", "path")})
    del backend
    gc.collect()
    return row


def measured_rows(plan: list[tuple[str, Path, bool]], chat_format: str, args) -> list[dict[str, Any]]:
    """measure() of each (name, path, perplexity) of the plan; a row finished earlier is read from OUT/rows instead
    (unless --force), so an interrupted run resumes."""
    rows = []
    for name, path, perplexity in plan:
        done = args.out / "rows" / f"{slug(name)}.json"
        if done.is_file() and not args.force:
            rows.append(json.loads(done.read_text()))
            continue
        rows.append(measure(name, path, chat_format, perplexity, args))
        done.parent.mkdir(exist_ok=True)
        done.write_text(json.dumps(rows[-1], indent=2))
    return rows


def export_all(
    model: Path, gptq: Path | None, out: Path, chat_format: str, force: bool, log_file: Path
) -> dict[str, Path]:
    from tulu_quant.config import ExportOnnxConfig, RunConfig
    from tulu_quant.stages import export_onnx

    paths = {}
    for name, (values, from_gptq) in EXPORTS.items():
        if from_gptq and gptq is None:
            log.warning("no GPTQ checkpoint: skipping %s", name)
            continue
        path = out / "exports" / slug(name)
        if force or not (path / "export.json").is_file():
            cfg = ExportOnnxConfig.model_validate({**values, "verify": False, "threads": THREADS})
            run_cfg = RunConfig(model={"chat_format": chat_format}, export_onnx=cfg)
            export_onnx.run(run_cfg, model, path, gptq if from_gptq else None, force=True, log_file=log_file)
        paths[name] = path
    return paths


# ------------------------------------------------------------------------------------------------------ report


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    from tulu_quant.progress import human_bytes

    lines = [
        f"Machine: {meta['machine']['line']}; {THREADS} threads. "
        f"Load average (1/5/15 min) before {meta['load_average_1_5_15']['before']}, after "
        f"{meta['load_average_1_5_15']['after']}. Command: `{meta['command']}`.",
        "",
        f"| path | size | TTFT (ms, {meta['prompt_tokens']}-token prompt) | "
        f"decode tokens/s ({meta['new_tokens']} new) | decode vs torch fp32 | "
        f"wiki ppl ({meta['windows']} x {meta['window_tokens']}) | ppl vs fp16 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = rows[0]  # torch fp32: the reference of both ratio columns
    for row in rows:
        ppl = f"{row['wiki_ppl']:.2f}" if "wiki_ppl" in row else "not measured"
        ppl_ratio = f"{row['wiki_ppl'] / base['wiki_ppl']:.3f}" if "wiki_ppl" in row and "wiki_ppl" in base else ""
        tokens = "" if row["new_tokens"] == meta["new_tokens"] else f" ({row['new_tokens']} tokens)"
        lines.append(
            f"| {row['name']} | {human_bytes(row['size_bytes'])} | {row['ttft_ms']:.0f} | "
            f"{row['decode_tokens_per_s']:.1f}{tokens} | "
            f"{row['decode_tokens_per_s'] / base['decode_tokens_per_s']:.1f}x | {ppl} | {ppl_ratio} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="results folder (exports, bench.json, bench.md)")
    parser.add_argument(
        "--run-dir", type=Path, default=Path("runs/standin"), help="a pipeline run with recover/quantize"
    )
    parser.add_argument("--model", type=Path, help="the fp16 model (instead of the run's recovered/)")
    parser.add_argument("--gptq", type=Path, help="the GPTQ checkpoint (instead of the run's gptq/)")
    parser.add_argument("--chat-format", choices=["tulu", "tokenizer"], help="default: the model's template, else tulu")
    parser.add_argument("--skip-torch-ppl", action="store_true", help="perplexity of the ONNX rows only")
    parser.add_argument(
        "--skip-gptq-ppl",
        action="store_true",
        help="no perplexity for the GPTQ checkpoint through transformers (slow on CPU; tulu-quant validate reports it)",
    )
    parser.add_argument("--speed-only", action="store_true", help="no perplexity at all (re-measure speed)")
    parser.add_argument("--force", action="store_true", help="rebuild exports and re-measure rows found in --out")
    parser.add_argument(
        "--new-tokens", type=int, default=NEW_TOKENS, help="greedy tokens timed per row (protocol: 128)"
    )
    parser.add_argument("--windows", type=int, default=WINDOWS, help="perplexity windows (protocol: 24)")
    parser.add_argument("--window-tokens", type=int, default=WINDOW_TOKENS, help="tokens per window (protocol: 512)")
    args = parser.parse_args(argv)

    from tulu_quant.chat import resolve_format
    from tulu_quant.progress import setup_logging

    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging(log_file=args.out / "bench.log")
    model, gptq = resolve_inputs(args)
    from transformers import AutoTokenizer

    chat_format = args.chat_format or resolve_format("auto", AutoTokenizer.from_pretrained(model))
    import torch

    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    exports = export_all(model, gptq, args.out, chat_format, args.force, args.out / "bench.log")
    load_before = load_average()
    torch_ppl = not (args.skip_torch_ppl or args.speed_only)
    plan = [("torch fp32 (fp16 weights)", model, torch_ppl)]
    if gptq is not None:
        plan.append(("GPTQ checkpoint, transformers", gptq, torch_ppl and not args.skip_gptq_ppl))
    plan += [(name, path, not args.speed_only) for name, path in exports.items()]
    rows = measured_rows(plan, chat_format, args)
    meta = {
        "command": "python -m benchmarks.bench_onnx " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_meta(),
        "model": str(model),
        "gptq": str(gptq) if gptq else None,
        "chat_format": chat_format,
        "prompt": PROMPT,
        "prompt_tokens": rows[0]["prompt_tokens"],
        "new_tokens": args.new_tokens,
        "windows": args.windows,
        "window_tokens": args.window_tokens,
        "threads": THREADS,
        "seconds": round(time.perf_counter() - start, 1),
        "load_average_1_5_15": {"before": load_before, "after": load_average()},
    }
    (args.out / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = markdown(rows, meta)
    (args.out / "bench.md").write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
