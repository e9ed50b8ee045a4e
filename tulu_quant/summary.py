"""The summary a run ends with: what each stage did, then one row per artifact (size, compression, quality deltas,
gates, where it is). Everything comes from manifest.json and the validation report; nothing is recomputed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import stages
from .backends import artifact_paths
from .config import RunConfig
from .manifest import Manifest
from .progress import Progress, human_bytes, human_seconds

SHORT = {
    "mmlu_0shot": "MMLU0",
    "mmlu_5shot": "MMLU5",
    "gsm_direct": "GSM",
    "gsm_cot": "GSM-CoT",
    "bbh_direct": "BBH",
    "bbh_cot": "BBH-CoT",
    "tydiqa_goldp": "TyDi-GP",
    "tydiqa_closedbook": "TyDi-CB",
    "codex_pass1": "pass@1",
    "codex_pass10": "pass@10",
    "alpaca_rougeL": "Alpaca-RL",
}


def table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]


def dir_bytes(manifest: Manifest, stage: str) -> int:
    entry = manifest.stages.get(stage, {})
    return sum(v["bytes"] for v in entry.get("outputs", {}).values())


def quality(cand: dict[str, Any] | None) -> tuple[str, str, str]:
    """(perplexity delta, benchmark deltas, gates) of one report candidate."""
    if cand is None:
        return "-", "-", "-"
    deltas = cand.get("deltas", {})
    ppl = [
        f"{k.removeprefix('ppl.')} {d['delta_pct']:+.1f}%"
        for k, d in deltas.items()
        if k.startswith("ppl.") and d.get("delta_pct") is not None
    ]
    kl = cand["metrics"].get("kl_mean", {}).get("value")
    bench = [
        f"{SHORT.get(k, k)} {d['delta']:+.1f}{'' if d['within_noise'] else '*'}"
        for k, d in deltas.items()
        if k in SHORT
    ]
    failed = [g["metric"] for g in cand.get("gates", []) if g["status"] == "fail"]
    gates = (
        f"FAILED: {', '.join(failed)}"
        if failed
        else f"{sum(g['status'] == 'pass' for g in cand.get('gates', []))} passed"
    )
    return ", ".join(ppl + ([f"KL {kl:.3f}"] if kl is not None else [])) or "-", " ".join(bench) or "-", gates


def artifact_rows(cfg: RunConfig, manifest: Manifest) -> list[tuple[str, ...]]:
    report_dir = manifest.output_dir("validate")
    report = (
        json.loads((report_dir / "report.json").read_text())
        if report_dir and (report_dir / "report.json").is_file()
        else None
    )
    by_path = {str(Path(c["path"]).resolve()): c for c in (report or {}).get("candidates", [])}
    reference = dir_bytes(manifest, stages.REFERENCE)
    rows = [
        (
            "artifact",
            "size",
            "vs fp16",
            "perplexity / KL",
            "benchmark deltas (points; * outside noise)",
            "gates",
            "where",
        )
    ]
    for stage in stages.artifact_stages():
        folder = manifest.output_dir(stage)
        if folder is None:
            continue
        is_reference = stage == stages.REFERENCE
        paths = artifact_paths(folder) if folder.is_dir() else [folder]
        for path in paths:  # a GGUF export: one row per file
            size = path.stat().st_size if path.is_file() else dir_bytes(manifest, stage)
            ratio = f"{reference / size:.1f}x smaller" if not is_reference and size else "1.0x"
            ppl, bench, gates = ("reference", "-", "-") if is_reference else quality(by_path.get(str(path.resolve())))
            label = stages.info(stage).artifact + (f" {gguf_type(path)}" if path.is_file() else "")
            rows.append((label, human_bytes(size), ratio, ppl, bench, gates, str(path)))
    return rows


def gguf_type(path: Path) -> str:
    """A GGUF file's type, from its export record (gguf.json beside it)."""
    record = path.parent / "gguf.json"
    files = json.loads(record.read_text()).get("files", []) if record.is_file() else []
    return next((f["type"] for f in files if f["file"] == path.name), "")


def print_run_summary(cfg: RunConfig, outcomes, progress: Progress) -> None:
    stage_rows = [("stage", "status", "time", "peak RSS")]
    for o in outcomes:
        stage_rows.append(
            (o.name, "skipped (unchanged)" if o.skipped else "ran", human_seconds(o.seconds), human_bytes(o.peak_rss))
        )
    progress.echo("")
    for line in table(stage_rows):
        progress.echo(line)
    manifest = Manifest.load(cfg.run_dir)
    rows = artifact_rows(cfg, manifest)
    if len(rows) > 1:
        progress.echo("")
        for line in table(rows):
            progress.echo(line)
    published = manifest.output_dir("publish")
    progress.echo(f"\nrun directory: {cfg.run_dir} (manifest.json records every input and output)")
    if published:
        progress.echo(f"publishable folder: {published} (README.md model card, SHA256SUMS)")
