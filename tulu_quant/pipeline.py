"""`tulu-quant run`: the stages a config lists, in order, in one run directory with its manifest.

Each stage module exposes ``step(cfg, ctx) -> Step``: what it reads, what it writes, the config values that matter, and
a ``run()`` that does the work (writing atomically). The pipeline skips a stage whose manifest entry says its inputs
and config are unchanged, measures time and memory of the others, and records them.
"""

from __future__ import annotations

import importlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import preflight
from .config import STAGE_ORDER, RunConfig, config_hash
from .manifest import Manifest
from .progress import NULL, Progress, captured, human_bytes, human_seconds, measure

log = logging.getLogger(__name__)

# Stage name -> "module:function" returning a Step; imported lazily so that `tulu-quant --help` stays light.
STAGES: dict[str, str] = {
    "standin": "tulu_quant.standin:step",
    "recover": "tulu_quant.stages.recover:step",
    "calibrate": "tulu_quant.stages.calibrate:step",
    "quantize": "tulu_quant.stages.quantize:step",
    "validate": "tulu_quant.stages.validate:step",
    "export_onnx": "tulu_quant.stages.export_onnx:step",
    "publish": "tulu_quant.stages.publish:step",
}

# Where each stage writes inside the run directory (the standin stage writes the config's base/diff paths instead).
OUTPUT_DIRS = {
    "recover": "recovered",
    "calibrate": "calib",
    "quantize": "gptq",
    "validate": "report",
    "export_onnx": "onnx",
    "publish": "publish",
}


@dataclass
class Context:
    """What a stage gets from the pipeline besides its config."""

    run_dir: Path
    manifest: Manifest
    progress: Progress = NULL
    log_file: Path | None = None

    def out(self, stage: str) -> Path:
        return self.run_dir / OUTPUT_DIRS[stage]

    def produced(self, stage: str) -> Path:
        """The output directory an earlier stage recorded in the manifest (a clear error if it has not run)."""
        path = self.manifest.output_dir(stage)
        if path is None or not path.exists():
            raise RuntimeError(
                f"{self.run_dir}: stage '{stage}' has not produced its output yet; "
                f"add it to the config's stages or run it first."
            )
        return path


@dataclass
class Step:
    name: str
    inputs: list[Path]
    outputs: list[Path]
    config: dict[str, Any]
    run: Callable[[], dict[str, Any]]  # does the work; returns a small JSON-able summary for the manifest
    describe: Callable[[dict[str, Any]], str] = field(default=lambda summary: "")


def resolve_stage(name: str) -> Callable[[RunConfig, Context], Step]:
    module, func = STAGES[name].split(":")
    return getattr(importlib.import_module(module), func)


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
    stages = list(cfg.stages)
    for flag, name in (("--only", only), ("--from", start)):
        if name is not None and name not in stages:
            raise ValueError(f"{flag} {name}: not a stage of this config; its stages are {stages}.")
    if only:
        return [only], [only]
    if start:
        return stages, stages[stages.index(start) :]
    return stages, []


def run_pipeline(
    cfg: RunConfig,
    progress: Progress = NULL,
    only: str | None = None,
    start: str | None = None,
    log_file: Path | None = None,
) -> list[StageOutcome]:
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(run_dir)
    ctx = Context(run_dir=run_dir, manifest=manifest, progress=progress, log_file=log_file)
    stages, forced = select(cfg, only, start)
    pending = [s for s in stages if s in forced or manifest.stages.get(s, {}).get("status") != "done"]
    for stage, size in preflight.check(cfg, pending).items():
        log.debug("preflight: %s will write about %s", stage, human_bytes(size))
    outcomes = []
    for index, name in enumerate(stages, 1):
        step = resolve_stage(name)(cfg, ctx)
        digest = config_hash(step.config)
        fresh, reason = manifest.is_fresh(name, digest, step.inputs, step.outputs)
        if fresh and name not in forced:
            log.info("[%d/%d] %s: skipped (%s)", index, len(stages), name, reason)
            entry = manifest.stages[name]
            outcomes.append(
                StageOutcome(name, True, reason, entry["seconds"], entry["peak_rss_bytes"], entry["summary"])
            )
            continue
        log.info("[%d/%d] %s: running (%s)", index, len(stages), name, "forced" if name in forced else reason)
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
            len(stages),
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


def stage_names() -> tuple[str, ...]:
    return STAGE_ORDER


__all__ = ["Context", "Step", "run_pipeline", "captured", "STAGES", "OUTPUT_DIRS"]
