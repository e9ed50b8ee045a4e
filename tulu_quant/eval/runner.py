"""Run a suite's jobs on one artifact, resumably.

Each finished job's result is written to the work folder (``<artifact>-<fingerprint>/<job>.json``) together with the
key it was computed under: the artifact's fingerprint (every file's name, size and modification time), the job's
settings and item hashes, the protocol version and, for jobs that compare with the reference, the reference's
fingerprint. A rerun (after a kill, or for another candidate) reuses every result whose key still matches and loads
the model only when something is left to compute.

A job runs on an engine: "native" (the artifact's own backend) or "vllm" (a vLLM server: validate.engine), as
``engine_of(job)`` says; each engine's backend is loaded once, when its first job needs it, and closed at the end (a
server the run started is stopped). A result computed on another engine than native carries it in its key, so
switching engines never mixes results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..progress import NULL, Progress, captured
from .results import JobResult
from .suite import Job

log = logging.getLogger(__name__)

# Bump when a change to the metrics or prompts makes earlier cached results incomparable.
PROTOCOL_VERSION = 1


def fingerprint(path: Path) -> str:
    """Identify an artifact by its files' names, sizes and modification times (hashing 26 GB would take minutes)."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]  # a GGUF artifact is one file
    entries = sorted((str(p.relative_to(path.parent)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def cache_key(job: Job, artifact_print: str, reference_print: str | None, engine: str = "native") -> str:
    payload = {
        "protocol": PROTOCOL_VERSION,
        "job": job.key,
        "settings": job.settings,
        "artifact": artifact_print,
        "reference": reference_print if job.uses_reference else None,
    }
    if engine != "native":  # native results keep the keys they had before engines existed
        payload["engine"] = engine
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _read_cached(file: Path, key: str) -> JobResult | None:
    if not file.is_file():
        return None
    try:
        stored = json.loads(file.read_text())
    except json.JSONDecodeError:
        return None
    if stored.get("cache_key") != key:
        return None
    result = JobResult.from_json(stored["result"])
    if not all(Path(f).exists() for f in result.files):
        return None
    result.cached = True
    return result


def _write_cached(file: Path, key: str, result: JobResult) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"cache_key": key, "result": result.to_json()}))
    os.replace(tmp, file)


def evaluate_artifact(
    path: Path,
    role: str,
    jobs: list[Job],
    work: Path,
    load: Callable[[Path, str], Any],
    reference_results: dict[str, JobResult] | None = None,
    reference_print: str | None = None,
    progress: Progress = NULL,
    log_file: Path | None = None,
    label: str = "",
    engine_of: Callable[[Job], str] = lambda job: "native",
    numbers: dict[str, int] | None = None,
    backends: dict[str, Any] | None = None,
) -> dict[str, JobResult]:
    """Every job's result on one artifact (role "reference" or "candidate"), from the cache where possible.
    ``load(path, engine)`` returns the backend of an engine. ``reference_results`` is read only for jobs that read
    the reference's result. ``numbers``: each job's number in the suite, for the log (default: its place in jobs).
    ``backends``: the caller's {engine: backend} of this artifact, kept (and closed by the caller) across calls;
    unset, what is loaded here is closed on return."""
    numbers = numbers or {job.key: index for index, job in enumerate(jobs, 1)}
    artifact_print = fingerprint(path)
    folder = work / f"{Path(path).name}-{artifact_print}"
    results: dict[str, JobResult] = {}
    owned = backends is None
    backends = {} if owned else backends
    with contextlib.ExitStack() as stack:
        for job in jobs:
            prefix = f"{label or Path(path).name} [{numbers[job.key]}/{len(numbers)}] {job.label}"
            if job.skipped:
                results[job.key] = job.skipped_result()
                log.info("%s: skipped (%s)", prefix, job.skipped if role == "reference" else "as for the reference")
                continue
            reference = (reference_results or {}).get(job.key) if job.reads_reference else None
            if role == "candidate" and job.uses_reference and reference is None:
                results[job.key] = job.skipped_result("the reference run has no result for it")
                continue
            engine = engine_of(job)
            key = cache_key(job, artifact_print, reference_print, engine)
            file = folder / f"{job.key}.json"
            cached = _read_cached(file, key)
            if cached is not None:
                results[job.key] = cached
                log.info("%s: cached (%s)", prefix, file)
                continue
            if engine not in backends:
                log.info("loading %s (%s)", path, engine)
                with captured(log_file):
                    backends[engine] = load(path, engine)
                if owned and hasattr(backends[engine], "close"):
                    stack.callback(backends[engine].close)
            start = time.perf_counter()
            with progress.task(prefix, total=job.total) as advance:
                result = job.compute(backends[engine], role, reference, folder, advance)
            result.seconds, result.engine = time.perf_counter() - start, engine
            _write_cached(file, key, result)
            results[job.key] = result
            log.info("%s: done in %.1f s (%s)", prefix, result.seconds, engine)
    return results
