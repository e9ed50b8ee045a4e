"""The short summary a run ends with: each stage, whether it ran, its time and memory, and what it produced."""

from __future__ import annotations

from .config import RunConfig
from .progress import Progress, human_bytes, human_seconds


def print_run_summary(cfg: RunConfig, outcomes, progress: Progress) -> None:
    rows = [("stage", "status", "time", "peak RSS", "details")]
    for o in outcomes:
        details = ", ".join(f"{k}={v}" for k, v in o.summary.items() if isinstance(v, (int, float, str)) and k != "bytes")
        if "bytes" in o.summary:
            details = f"{human_bytes(o.summary['bytes'])}" + (f", {details}" if details else "")
        rows.append((o.name, "skipped" if o.skipped else "ran", human_seconds(o.seconds), human_bytes(o.peak_rss), details[:90]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    progress.echo("")
    for i, row in enumerate(rows):
        progress.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            progress.echo("  ".join("-" * w for w in widths))
    progress.echo(f"\nrun directory: {cfg.run_dir} (manifest.json records every input and output)")
