"""`tulu-quant run`: the stages a config lists, in order, in one run directory with its manifest.

Each stage module (tulu_quant/stages/) exposes ``step(cfg, ctx) -> Step``: what it reads, what it writes, the config
values that matter, and a ``run()`` that does the work (writing atomically). The pipeline skips a stage whose manifest
entry says its inputs and config are unchanged, measures time and memory of the others, and records them.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import preflight, stages
from .config import ConfigError, RunConfig, config_hash
from .manifest import Manifest
from .progress import NULL, Progress, human_bytes, human_seconds, measure
from .stages.base import Context

log = logging.getLogger(__name__)


@dataclass
class StageOutcome:
    name: str
    skipped: bool
    reason: str
    seconds: float
    peak_rss: int
    summary: dict[str, Any]


def select(cfg: RunConfig, only: str | None = None, start: str | None = None) -> tuple[list[str], list[str]]:
    """(stages to consider, stages forced to re-run) for --only / --from."""
    names = list(cfg.stages)
    for flag, name in (("--only", only), ("--from", start)):
        if name is not None and name not in names:
            raise ConfigError(f"{flag} {name}: not a stage of this config; its stages are {names}.")
    if only:
        return [only], [only]
    if start:
        return names, names[names.index(start) :]
    return names, []


def run_pipeline(
    cfg: RunConfig,
    progress: Progress = NULL,
    only: str | None = None,
    start: str | None = None,
    log_file: Path | None = None,
) -> list[StageOutcome]:
    """Run the config's stages in cfg.run_dir (skipping unchanged ones unless forced by only/start); returns what
    each stage did."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(run_dir)
    ctx = Context(run_dir=run_dir, manifest=manifest, progress=progress, log_file=log_file)
    names, forced = select(cfg, only, start)
    pending = [s for s in names if s in forced or manifest.stages.get(s, {}).get("status") != "done"]
    for stage, size in preflight.check(cfg, pending).items():
        log.debug("preflight: %s will write about %s", stage, human_bytes(size))
    outcomes = []
    for index, name in enumerate(names, 1):
        step = stages.load(name).step(cfg, ctx)
        digest = config_hash(step.config)
        fresh, reason = manifest.is_fresh(name, digest, step.inputs, step.outputs)
        if fresh and name not in forced:
            log.info("[%d/%d] %s: skipped (%s)", index, len(names), name, reason)
            entry = manifest.stages[name]
            outcomes.append(
                StageOutcome(name, True, reason, entry["seconds"], entry["peak_rss_bytes"], entry["summary"])
            )
            continue
        log.info("[%d/%d] %s: running (%s)", index, len(names), name, "forced" if name in forced else reason)
        _clear_partials(step.outputs)
        prints = manifest.fingerprint(step.inputs)
        manifest.stages.pop(name, None)
        manifest.save()
        with measure() as usage:
            summary = step.run()
        manifest.record(
            name,
            config_hash=digest,
            config=step.config,
            inputs=step.inputs,
            input_prints=prints,
            outputs=step.outputs,
            seconds=usage.seconds,
            peak_rss=usage.peak_rss,
            summary=summary,
        )
        manifest.save()
        detail = step.describe(summary)
        log.info(
            "[%d/%d] %s: done in %s, peak RSS %s%s",
            index,
            len(names),
            name,
            human_seconds(usage.seconds),
            human_bytes(usage.peak_rss),
            f"; {detail}" if detail else "",
        )
        outcomes.append(StageOutcome(name, False, reason, usage.seconds, usage.peak_rss, summary))
    return outcomes


def _clear_partials(outputs: list[Path]) -> None:
    """Remove what a killed earlier attempt left half-written (temporary siblings of the outputs)."""
    for out in outputs:
        for stale in Path(out).parent.glob(f".{Path(out).name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
