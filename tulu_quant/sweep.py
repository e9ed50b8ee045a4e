"""`tulu-quant sweep`: several quantization variants of one model, compared in one table so a publisher can pick.

The shared stages (stand-in, recover, calibrate) run once in the config's run directory; each variant gets its own run
directory under RUN_DIR/sweep/VARIANT whose manifest adopts those shared stages, then runs quantize -> validate ->
export_onnx there (resumable like any run). The table (sweep.md, sweep.json) has, per variant: settings, size,
perplexity delta, KL, benchmark deltas, gates, and decode speed on this machine's device.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from . import stages
from .config import ConfigError, RunConfig, load_config
from .errors import UserError
from .manifest import Manifest
from .pipeline import run_pipeline
from .progress import NULL, Progress, human_bytes
from .summary import dir_bytes, quality

log = logging.getLogger(__name__)


def sweep_stages(role: str) -> list[str]:
    """Stages a sweep runs once for all variants ("shared") or once per variant ("variant"), in pipeline order."""
    return [name for name in stages.ORDER if stages.info(name).sweep == role]


def decode_speed(model_dir: Path, prompt_ids: list[int], new_tokens: int = 32) -> float:
    """Greedy decode tokens/s of an artifact through the backend layer (the device the backend picks)."""
    from .backends import load_backend
    from .config import GenerationSettings

    backend = load_backend(model_dir)
    start = time.perf_counter()
    produced = backend.generate(prompt_ids, GenerationSettings(max_new_tokens=new_tokens))
    return len(produced) / (time.perf_counter() - start)


def variant_row(name: str, cfg: RunConfig, manifest: Manifest, reference_bytes: int, speed: bool) -> dict[str, Any]:
    report_dir = manifest.output_dir("validate")
    report = json.loads((report_dir / "report.json").read_text()) if report_dir else {"candidates": []}
    gptq = manifest.output_dir("quantize")
    cand = next((c for c in report["candidates"] if Path(c["path"]).resolve() == gptq.resolve()), None)
    ppl, bench, gates = quality(cand)
    size = dir_bytes(manifest, "quantize")
    row = {
        "variant": name,
        "bits": cfg.quantize.bits,
        "group_size": cfg.quantize.group_size,
        "desc_act": cfg.quantize.desc_act,
        "sym": cfg.quantize.sym,
        "bytes": size,
        "compression": round(reference_bytes / size, 2) if size else None,
        "perplexity_kl": ppl,
        "benchmarks": bench,
        "gates": gates,
        "path": str(gptq),
    }
    if speed:
        from transformers import AutoTokenizer

        ids = AutoTokenizer.from_pretrained(gptq)("The history of the river").input_ids
        row["gptq_tokens_per_s"] = round(decode_speed(gptq, ids), 1)
        onnx = manifest.output_dir("export_onnx")
        if onnx is not None:
            row["onnx_tokens_per_s"] = round(decode_speed(onnx, ids), 1)
    return row


def markdown(rows: list[dict[str, Any]], cfg: RunConfig) -> str:
    lines = [
        f"# Variant sweep: {cfg.model.name}",
        "",
        "Deltas are against the fp16 reference on the same items "
        "(* outside noise); speed is greedy decode on this machine.",
        "",
        "| variant | bits | group | act order | sym | size | vs fp16 | perplexity / KL | benchmarks | gates | "
        "GPTQ tok/s | ONNX tok/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['bits']} | {r['group_size']} | {r['desc_act']} | {r['sym']} | "
            f"{human_bytes(r['bytes'])} | {r['compression']}x | {r['perplexity_kl']} | {r['benchmarks']} | "
            f"{r['gates']} | {r.get('gptq_tokens_per_s', '-')} | {r.get('onnx_tokens_per_s', '-')} |"
        )
    return "\n".join(lines) + "\n"


def run(
    config_path: Path,
    variants: list[str],
    overrides: dict[str, Any] | None = None,
    speed: bool = True,
    progress: Progress = NULL,
    log_file: Path | None = None,
) -> Path:
    """Run the shared stages of the config once, then each variant's stages in RUN_DIR/sweep/VARIANT; write
    sweep.md and sweep.json there and return sweep.md's path. A variant that fails (a gate, a group size that does
    not fit the model) gets an error row; the others go on."""
    overrides = dict(overrides or {})
    main = load_config(config_path, overrides)
    if not variants:
        raise ConfigError(f"{config_path}: no variants to sweep; pass --variants or list them under `sweep:`.")
    shared_stages, variant_stages = sweep_stages("shared"), sweep_stages("variant")
    configs = {  # every variant's settings checked before any stage runs: a typo is not found an hour in
        name: load_config(
            config_path, {**overrides, "quantize.variant": name, "run_dir": str(main.run_dir / "sweep" / name)}
        )
        for name in variants
    }
    shared = main.model_copy(update={"stages": [s for s in main.stages if s in shared_stages]})
    run_pipeline(shared, progress, log_file=log_file)
    shared_manifest = Manifest.load(main.run_dir)
    reference_bytes = dir_bytes(shared_manifest, stages.REFERENCE)
    rows = []
    for name, cfg in configs.items():
        cfg = cfg.model_copy(update={"stages": [s for s in cfg.stages if s in variant_stages]})
        manifest = Manifest.load(cfg.run_dir)
        manifest.adopt(shared_manifest, shared_stages)
        manifest.save()
        log.info("sweep: variant %s -> %s", name, cfg.run_dir)
        try:
            run_pipeline(cfg, progress, log_file=log_file)
        except UserError as err:  # one variant failing (a gate, a shape it cannot apply to) must not sink the sweep
            log.error("sweep: variant %s failed: %s", name, err)
            rows.append(
                {
                    "variant": name,
                    "bits": cfg.quantize.bits,
                    "group_size": cfg.quantize.group_size,
                    "desc_act": cfg.quantize.desc_act,
                    "sym": cfg.quantize.sym,
                    "bytes": 0,
                    "compression": None,
                    "perplexity_kl": "-",
                    "benchmarks": "-",
                    "gates": f"error: {str(err)[:80]}",
                    "path": "-",
                }
            )
            continue
        rows.append(variant_row(name, cfg, Manifest.load(cfg.run_dir), reference_bytes, speed))
    out = main.run_dir / "sweep"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(rows, indent=2))
    (out / "sweep.md").write_text(markdown(rows, main))
    return out / "sweep.md"
