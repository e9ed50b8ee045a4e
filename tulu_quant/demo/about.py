"""The demo's About panel: what is served, why, how it was quantized, and its numbers from the run's validation
report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..artifacts import Artifact, Choice, read_json
from ..manifest import Manifest
from ..progress import human_bytes
from .engine import Engine


def quantization_facts(artifact: Artifact) -> dict[str, Any]:
    path = artifact.path
    if artifact.kind == "gptq":
        quant = read_json(path / "quantize_config.json") or read_json(path / "config.json").get(
            "quantization_config", {}
        )
        keys = ("bits", "group_size", "desc_act", "sym", "damp_percent", "true_sequential", "checkpoint_format")
        return {k: quant[k] for k in keys if k in quant}
    if artifact.kind == "gguf":
        files = read_json(path.parent / "gguf.json").get("files", [])
        entry = next((f for f in files if f["file"] == path.name), {})
        return {k: entry[k] for k in ("type", "bits_per_weight", "imatrix") if k in entry}
    if artifact.kind == "onnx":
        record = read_json(path / "export.json")
        facts = {k: record[k] for k in ("precision", "target", "source") if k in record}
        return facts | {k: v for k, v in record.get("builder_options", {}).items()}
    return {"dtype": artifact.precision or "unknown"}


def read_report(run_dir: Path | None) -> dict[str, Any] | None:
    if run_dir is None:
        return None
    folder = Manifest.load(run_dir).output_dir("validate")
    path = folder / "report.json" if folder is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def report_rows(
    report: dict[str, Any] | None, artifact_path: Path, limit: int = 12
) -> tuple[list[tuple[str, ...]], str]:
    """(rows of [metric, reference, this artifact, delta], verdict) for the artifact in a validation report."""
    if not report:
        return [], ""
    target = str(Path(artifact_path).resolve())
    reference = report["reference"]["metrics"]
    entry = next((c for c in report["candidates"] if str(Path(c["path"]).resolve()) == target), None)
    if entry is None and str(Path(report["reference"]["path"]).resolve()) != target:
        return [], "the validation report does not cover this artifact"

    def fmt(metric: dict[str, Any] | None) -> str:
        if not metric or metric.get("value") is None:
            return "-"
        digits = {"points": 2, "ppl": 3, "nats": 4}.get(metric["unit"], 4)
        return f"{metric['value']:.{digits}f}"

    metrics = entry["metrics"] if entry else reference
    order = sorted(
        (k for k, m in metrics.items() if m.get("value") is not None and not m.get("skipped")),
        key=lambda k: (not k.startswith("ppl."), k not in ("kl_mean", "top1_agreement"), k),
    )
    rows = []
    for key in order[:limit]:
        delta = (entry or {}).get("deltas", {}).get(key)
        shown = "-" if not delta else f"{delta['delta']:+.3g}"
        if delta and delta.get("delta_pct") is not None:
            shown += f" ({delta['delta_pct']:+.2f} %)"
        rows.append((metrics[key]["label"], fmt(reference.get(key)), fmt(metrics[key]), shown))
    verdict = "" if entry is None else ("all quality gates passed" if entry.get("passed") else "quality gates FAILED")
    return rows, verdict


def about_markdown(engine: Engine, choice: Choice, report: dict[str, Any] | None, compare: Engine | None = None) -> str:
    artifact = engine.artifact
    lines = [
        f"### {artifact.label}",
        "",
        f"- folder: `{artifact.path}`",
        f"- why this one: {choice.reason}",
        f"- size on disk: {human_bytes(engine.size_bytes)}",
        f"- chat format: `{engine.chat_format}`",
        f"- context: {engine.backend.context_length} tokens",
    ]
    info = engine.backend.describe()
    providers = f" ({', '.join(info['providers'])})" if info.get("providers") else ""
    lines += [f"- runs on: {info.get('device', 'cpu')}{providers}"]
    if choice.others:
        lines += ["- also in this run: " + ", ".join(f"{a.label} (`{a.path.name}`)" for a in choice.others)]
    facts = quantization_facts(artifact)
    lines += ["", "#### Quantization", "", *[f"- {k}: `{v}`" for k, v in facts.items()]]
    rows, verdict = report_rows(report, artifact.path)
    if rows:
        lines += [
            "",
            f"#### Validation report ({verdict})",
            "",
            "| metric | full precision | this model | delta |",
            "| --- | --- | --- | --- |",
            *[f"| {' | '.join(row)} |" for row in rows],
        ]
    elif report is None:
        lines += ["", "No validation report in this run (`tulu-quant validate` writes one)."]
    elif verdict:
        lines += ["", f"Validation report: {verdict}."]
    if compare is not None:
        lines += [
            "",
            f"Compare tab: {compare.artifact.label} at `{compare.artifact.path}` ({human_bytes(compare.size_bytes)}).",
        ]
    return "\n".join(lines)
