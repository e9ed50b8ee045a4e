"""The report's PNG: perplexity change and benchmark deltas per candidate, with 95% intervals.

Left: perplexity increase in percent per text source. Right: benchmark deltas in points (candidate minus reference),
error bars from the paired bootstrap. Matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_chart(path: Path, candidates: list[dict[str, Any]]) -> bool:
    """Draw the chart; False (and no file) when matplotlib is not installed or there is nothing to compare."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ppl_keys = sorted({k for c in candidates for k, d in c["deltas"].items() if d.ci_unit == "%"})
    bench_keys = [
        k for k in dict.fromkeys(k for c in candidates for k, d in c["deltas"].items() if d.ci_unit == "points")
    ]
    if not candidates or not (ppl_keys or bench_keys):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, max(2, len(bench_keys) / 3)]})
    width = 0.8 / len(candidates)
    for panel, keys, unit, title in (
        (axes[0], ppl_keys, "%", "perplexity increase (%)"),
        (axes[1], bench_keys, "points", "benchmark delta (points)"),
    ):
        for i, cand in enumerate(candidates):
            xs, ys, lows, highs = [], [], [], []
            for j, key in enumerate(keys):
                delta = cand["deltas"].get(key)
                if delta is None:
                    continue
                value = delta.delta_pct if unit == "%" else delta.delta
                xs.append(j + (i - (len(candidates) - 1) / 2) * width)
                ys.append(value)
                lows.append(max(0.0, value - delta.ci[0]))
                highs.append(max(0.0, delta.ci[1] - value))
            panel.bar(xs, ys, width, yerr=[lows, highs], capsize=3, label=cand["name"])
        panel.axhline(0, color="black", linewidth=0.8)
        panel.set_xticks(range(len(keys)), keys, rotation=30, ha="right", fontsize=8)
        panel.set_title(title)
        panel.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
