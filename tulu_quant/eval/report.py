"""Gates, report.json and report.md from the metrics of the reference and each candidate.

A gate (tulu_quant.config.Gate) applies to every candidate metric whose key matches its pattern. Value rules
(max_value, min_value) always count; change rules (max_increase, max_increase_pct, max_drop) compare with the reference
and, with outside_noise_only, a change whose paired 95% interval contains 0 does not fail.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import Gate
from .results import Delta, Metric


@dataclass
class GateOutcome:
    gate: str  # the rule as text
    metric: str
    status: str  # "pass", "fail", "skipped", "n/a"
    detail: str


def describe_gate(gate: Gate) -> str:
    rules = [
        f"{name} {getattr(gate, name):g}"
        for name in ("max_increase", "max_increase_pct", "max_drop", "max_value", "min_value")
        if getattr(gate, name) is not None
    ]
    return f"{gate.metric}: " + ", ".join(rules) + (" (outside noise)" if gate.outside_noise_only else "")


def unmatched_gates(gates: list[Gate], keys: list[str]) -> list[str]:
    """Gate patterns that match none of the suite's metric keys (a typo would otherwise pass silently)."""
    return [g.metric for g in gates if not any(fnmatch.fnmatchcase(k, g.metric) for k in keys)]


def check_gate(gate: Gate, metric: Metric, delta: Delta | None) -> GateOutcome:
    text = describe_gate(gate)
    if metric.skipped:
        return GateOutcome(text, metric.key, "skipped", metric.skipped)
    value_fail, change_fail = [], []
    if gate.max_value is not None and metric.value > gate.max_value:
        value_fail.append(f"{metric.value:.4g} > {gate.max_value:g}")
    if gate.min_value is not None and metric.value < gate.min_value:
        value_fail.append(f"{metric.value:.4g} < {gate.min_value:g}")
    change_rules = (gate.max_increase, gate.max_increase_pct, gate.max_drop)
    if any(rule is not None for rule in change_rules):
        if delta is None:
            return GateOutcome(
                text,
                metric.key,
                "fail" if value_fail else "n/a",
                "; ".join(value_fail) or "no reference value to compare with",
            )
        change = delta.candidate - delta.reference
        if gate.max_increase is not None and change > gate.max_increase:
            change_fail.append(f"increase {change:.4g} > {gate.max_increase:g}")
        if gate.max_drop is not None and -change > gate.max_drop:
            change_fail.append(f"drop {-change:.4g} > {gate.max_drop:g}")
        if gate.max_increase_pct is not None:
            pct = 100.0 * (delta.candidate / delta.reference - 1.0)
            if pct > gate.max_increase_pct:
                change_fail.append(f"increase {pct:.2f} % > {gate.max_increase_pct:g} %")
        if change_fail and gate.outside_noise_only and delta.within_noise:
            change_fail = []
            if not value_fail:
                return GateOutcome(text, metric.key, "pass", "change within noise (95% interval contains 0)")
    failures = value_fail + change_fail
    return GateOutcome(text, metric.key, "fail" if failures else "pass", "; ".join(failures))


def check_gates(gates: list[Gate], metrics: dict[str, Metric], deltas: dict[str, Delta]) -> list[GateOutcome]:
    outcomes = []
    for gate in gates:
        for key in sorted(k for k in metrics if fnmatch.fnmatchcase(k, gate.metric)):
            outcomes.append(check_gate(gate, metrics[key], deltas.get(key)))
    return outcomes


# ------------------------------------------------------------------------------------------------------ report.json


def report_json(
    reference: dict[str, Any], candidates: list[dict[str, Any]], protocol: dict[str, Any], versions: dict[str, str]
) -> dict[str, Any]:
    """reference/candidates: {"name", "path", "info", "metrics": {key: Metric}, "timings": {...}}; candidates also
    carry "deltas" {key: Delta} and "gates" [GateOutcome]."""

    def artifact(entry: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in entry.items() if k not in ("metrics", "deltas", "gates")}
        out["metrics"] = {k: asdict(m) for k, m in entry["metrics"].items()}
        if "deltas" in entry:
            out["deltas"] = {k: asdict(d) for k, d in entry["deltas"].items()}
            out["gates"] = [asdict(g) for g in entry["gates"]]
            out["passed"] = "error" not in entry and not any(g.status == "fail" for g in entry["gates"])
        return out

    return {
        "format": "tulu-quant validation report",
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "protocol": protocol,
        "versions": versions,
        "reference": artifact(reference),
        "candidates": [artifact(c) for c in candidates],
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2, default=str))


# ------------------------------------------------------------------------------------------------------ report.md


def fmt_value(metric: Metric | None) -> str:
    if metric is None:
        return "-"
    if metric.skipped:
        return "skipped"
    digits = {"points": 2, "ppl": 3, "nats": 5, "ratio": 4}[metric.unit]
    text = f"{metric.value:.{digits}f}"
    return text + (f" [{metric.ci[0]:.{digits}f}, {metric.ci[1]:.{digits}f}]" if metric.ci else "")


def fmt_delta(delta: Delta | None) -> tuple[str, str, str]:
    """(delta, its 95% interval, noise verdict)."""
    if delta is None:
        return "-", "-", "-"
    if delta.ci_unit == "%":
        text = f"{delta.delta:+.3f} ({delta.delta_pct:+.2f} %)"
    else:
        text = f"{delta.delta:+.2f}"
    interval = f"[{delta.ci[0]:+.2f}, {delta.ci[1]:+.2f}] {delta.ci_unit}"
    verdict = "within noise" if delta.within_noise else "significant"
    if delta.p_value is not None:
        verdict += f" (McNemar p={delta.p_value:.3g})"
    return text, interval, verdict


def markdown(reference: dict[str, Any], candidates: list[dict[str, Any]], protocol: dict[str, Any]) -> str:
    lines = [
        "# Validation report",
        "",
        f"Reference: `{reference['path']}` ({reference['info']['kind']}). Suite: "
        f"`{protocol['suite_name']}`, chat format `{protocol['chat_format']}`, perplexity windows of "
        f"{protocol['context_length']} tokens. Values are points (0-100) unless the unit says otherwise; "
        "brackets hold 95% intervals; deltas are candidate minus reference on the same items, with a paired "
        "bootstrap interval (and the exact McNemar test for accuracies).",
        "",
    ]
    lines += [
        f"## {reference['name']} (reference, {reference['info']['kind']}, "
        f"{reference['info']['size_bytes'] / 2**20:.1f} MiB)",
        "",
        f"`{reference['path']}`" + _engine_line(reference),
        "",
        "| metric | value [95% CI] | items / tokens | interval |",
        "| --- | --- | --- | --- |",
    ]
    for key, metric in reference["metrics"].items():
        if not metric.skipped:
            lines.append(f"| {metric.label} (`{key}`) | {fmt_value(metric)} | {metric.n} | {metric.ci_method or '-'} |")
    lines.append("")
    for cand in candidates:
        if "error" in cand:
            lines += [
                f"## {cand['name']} ({cand['info']['kind']}, {cand['info']['size_bytes'] / 2**20:.1f} MiB): "
                "FAILED, not scored",
                "",
                f"`{cand['path']}`" + _engine_line(cand),
                "",
                f"It could not be scored: {cand['error']}",
                "",
            ]
            continue
        gates_by_metric: dict[str, list] = {}
        for outcome in cand["gates"]:
            gates_by_metric.setdefault(outcome.metric, []).append(outcome)
        verdict = "FAILED" if any(g.status == "fail" for g in cand["gates"]) else "passed"
        lines += [
            f"## {cand['name']} ({cand['info']['kind']}, {cand['info']['size_bytes'] / 2**20:.1f} MiB): "
            f"gates {verdict}",
            "",
            f"`{cand['path']}`" + _engine_line(cand),
            "",
            "| metric | reference | candidate | delta | delta 95% CI | noise | gate |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for key, metric in cand["metrics"].items():
            ref_metric = reference["metrics"].get(key)
            delta, interval, noise = fmt_delta(cand["deltas"].get(key))
            gate = (
                "; ".join(f"{g.status}{': ' + g.detail if g.detail else ''}" for g in gates_by_metric.get(key, []))
                or "-"
            )
            lines.append(
                f"| {metric.label} (`{key}`) | {fmt_value(ref_metric)} | {fmt_value(metric)} | {delta} | "
                f"{interval} | {noise} | {gate} |"
            )
        lines.append("")
    skipped_rows = {k: m.skipped for k, m in reference["metrics"].items() if m.skipped}
    if skipped_rows:
        lines += ["## Not measured", "", *[f"- `{k}`: {reason}" for k, reason in skipped_rows.items()], ""]
    lines += protocol_lines(protocol)
    lines += [
        "## Time per benchmark (seconds; cached results took no time in this run)",
        "",
        "| artifact | " + " | ".join(protocol["jobs"]) + " |",
        "| --- |" + " --- |" * len(protocol["jobs"]),
    ]
    for entry in [reference, *candidates]:
        cells = [_timing(entry["timings"].get(job)) for job in protocol["jobs"]]
        lines.append(f"| {entry['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Protocol details, data hashes and library versions are in report.json.", ""]
    return "\n".join(lines)


def protocol_lines(protocol: dict[str, Any]) -> list[str]:
    """The protocol section: its name and settings, and every data set read (where from, sha256)."""
    if "name" not in protocol:
        return []
    settings = ", ".join(f"{k} {v}" for k, v in protocol["settings"].items() if k != "name")
    lines = ["## Protocol", "", f"`{protocol['name']}` (docs/protocol.md): {settings}.", ""]
    lines += [f"- {name}: {line}." for name, line in protocol.get("benchmarks", {}).items()]
    lines += [""] if protocol.get("benchmarks") else []
    lines += ["| benchmark | data | sha256 |", "| --- | --- | --- |"]
    for job, data in protocol["datasets"].items():
        for part, origin in data.items() if "sha256" not in data else [("", data)]:
            where = origin.get("path") or origin.get("package") or origin.get("hub")
            if origin.get("file"):
                where = f"{where} {origin['file']}"
            sha = origin.get("sha256") or "-"
            lines.append(
                f"| {job}{' ' + part if part else ''} | `{where}` | {sha[:16] + '...' if sha != '-' else sha} |"
            )
    return [*lines, ""]


def _engine_line(entry: dict[str, Any]) -> str:
    engine = entry["info"].get("engine")
    return f" ({engine})" if engine and engine != "native backend" else ""


def _timing(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("skipped"):
        return "-"
    engine = f" {entry['engine']}" if entry.get("engine", "native") != "native" else ""
    return f"{entry['seconds']:.1f}{engine}" + (" (cached)" if entry.get("cached") else "")
