"""Score several artifacts at once on a CPU, each in a worker process of its own with a share of the cores.

Why: decoding a small model on a CPU is bound by reading its weights once per token, and a second intra-op thread
barely helps (the stand-in: 46 ms a step on 2 threads, 38 ms on 1), while two processes of one thread each decode
two artifacts in the time of one. Scoring (perplexity) gains less from the second thread than from the second
process (a 512-token window: 1.2 s on 2 threads, 1.9 s on 1, two at a time). So validate gives each of ``workers``
processes ``cores // workers`` threads, and the parent hands out jobs: a free worker takes the next job of the
artifact it has loaded, else of an artifact no worker holds (the reference first), else shares the remaining jobs of
one that another worker holds, so no core idles while work is left. A candidate's jobs that read the reference's
result (its KL windows, AlpacaFarm's answers) start once the reference's same job is finished; until then its other
jobs run. The parent owns the progress display, the log and the results; finished jobs land in the work folder as in
a serial run, so a rerun with any number of workers reuses them.

    parent -> worker   ("job", path, role, label, job key, the reference's result or None) | ("stop",)
    worker -> parent   ("log", id, record) | ("task", id, description, total) | ("advance", id, n) | ("end", id)
                       | ("done", id, result) | ("failed", id, message)

One worker (``validate.workers`` 1, or auto where the models do not fit twice, on CUDA and with vLLM) is the serial
run in this process: tulu_quant.stages.validate does not come here.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing
import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..errors import UserError
from ..progress import NULL, Progress
from .results import JobResult
from .suite import Job

log = logging.getLogger(__name__)

PROCESS_OVERHEAD = 1 << 30  # torch, transformers and a backend's libraries in a worker, before the model
RESIDENT_FACTOR = 2  # a float16 checkpoint computes in float32 on a CPU: twice its size on disk


# ------------------------------------------------------------------------------------------------------ pure helpers


def worker_count(
    setting: int | str, artifacts: list[int], cores: int, available: int, device: str, engine: str
) -> tuple[int, str]:
    """(workers, why) for validate.workers. ``artifacts``: each artifact's size on disk in bytes; ``available``: free
    memory in bytes. auto: as many as there are cores and artifacts, while every worker's model fits in 3/4 of
    the free memory at once; one on CUDA or with vLLM (one device, one server at a time). An explicit number is
    capped at the artifacts and cores, and is an error where it cannot apply."""
    serial = "cuda" if device == "cuda" else ("vllm" if engine == "vllm" else None)
    if setting == "auto":
        if serial:
            return 1, f"one artifact at a time on {'CUDA' if serial == 'cuda' else 'vLLM servers'}"
        fit = int(0.75 * available) // (RESIDENT_FACTOR * max(artifacts, default=0) + PROCESS_OVERHEAD)
        workers = max(1, min(cores, len(artifacts), fit))
        limit = "cores" if workers == cores else "artifacts" if workers == len(artifacts) else "free memory"
        return workers, f"{workers} at a time ({limit}: {cores} cores, {len(artifacts)} artifacts, fit {fit})"
    workers = int(setting)
    if workers > 1 and serial:
        raise ConfigError(
            f"validate.workers {workers} runs artifacts in parallel processes on the CPU; with "
            f"{'device cuda' if serial == 'cuda' else 'engine vllm'} set it to 1 or auto."
        )
    workers = max(1, min(workers, len(artifacts), cores))
    return workers, f"{workers} at a time (validate.workers {setting})"


def run_order(jobs: list[Job], role: str) -> list[Job]:
    """The order an artifact's jobs are handed out in: the suite's (the longest, perplexity, first: a long job last
    would run alone at the end), except that the reference runs what candidates wait for first. A candidate's job
    that cannot start yet is passed over (``ready``)."""
    if role != "reference":
        return list(jobs)
    return [job for job in jobs if job.reads_reference] + [job for job in jobs if not job.reads_reference]


@dataclass
class Artifact:
    """The parent's account of one artifact: jobs not handed out yet (in run order), running, finished."""

    path: Path
    role: str
    label: str
    pending: list[Job]
    reads: set[str] = field(default_factory=set)  # keys of the jobs that read the reference's result
    running: set[str] = field(default_factory=set)
    done: dict[str, JobResult] = field(default_factory=dict)
    error: str | None = None

    @property
    def over(self) -> bool:
        return self.error is not None or (not self.pending and not self.running)


def ready(artifact: Artifact, reference: Artifact) -> Job | None:
    """The artifact's next job that can start now. Jobs that read the reference's result (the KL windows' pass, KL,
    AlpacaFarm) run one after another, in order (they share the KL windows' files), and a candidate's only once the
    reference's same job is finished (or the reference is over)."""
    if artifact.error is not None:
        return None
    blocked = bool(artifact.running & artifact.reads)  # the chain's previous job still runs
    for job in artifact.pending:
        if not job.reads_reference:
            return job
        if blocked:
            continue
        if artifact.role == "candidate" and job.key not in reference.done and not reference.over:
            blocked = True  # the chain waits for the reference, in order
            continue
        return job
    return None


def choose(artifacts: list[Artifact], loaded: int | None, holders: set[int]) -> tuple[int, Job] | None:
    """A free worker's next (artifact index, job): one of the artifact it has loaded, else of one no worker holds
    (in order: the reference first), else any (two workers share an artifact's remaining jobs)."""
    reference = artifacts[0]
    if loaded is not None and (job := ready(artifacts[loaded], reference)):
        return loaded, job
    for prefer_unheld in (True, False):
        for index, artifact in enumerate(artifacts):
            if prefer_unheld and index in holders:
                continue
            if job := ready(artifact, reference):
                return index, job
    return None


@dataclass(frozen=True)
class Spec:
    """What a worker needs: the suite's jobs (their items and tokens included: they pickle) and how to load backends."""

    jobs: list[Job]
    device: str  # validate.device, for the transformers backends
    reference: Path
    kinds: dict[Path, str]
    work: Path
    log_file: Path | None
    threads: int


# ------------------------------------------------------------------------------------------------------ the parent


def score_in_parallel(
    spec: Spec,
    artifacts: list[tuple[Path, str, str]],
    workers: int,
    progress: Progress = NULL,
) -> dict[Path, dict[str, JobResult] | str]:
    """Per artifact (path, role, label; the reference first): its results in the suite's job order, or the sentence
    why it could not be scored. A reference that fails raises, as in a serial run."""
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
    outbox = context.Queue()
    inboxes = [context.Queue() for _ in range(workers)]
    procs = [
        context.Process(target=_worker, args=(spec, i, inboxes[i], outbox), name=f"validate-{i}", daemon=True)
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    reads = {job.key for job in spec.jobs if job.reads_reference}
    state = [Artifact(path, role, label, run_order(spec.jobs, role), reads) for path, role, label in artifacts]
    reference = state[0]
    loaded: dict[int, int | None] = dict.fromkeys(range(workers))
    busy: dict[int, tuple[int, str]] = {}
    tasks: dict[int, tuple[contextlib.ExitStack, Callable]] = {}  # a worker's progress bar and its advance

    def end_task(wid: int) -> None:
        if wid in tasks:
            tasks.pop(wid)[0].close()

    def fail(index: int, message: str) -> None:
        state[index].error = state[index].error or message
        if index == 0:
            raise ReferenceFailed(f"{reference.path}: the reference could not be scored: {message}")

    def dispatch() -> None:
        for wid in range(workers):
            if wid in busy or not procs[wid].is_alive():
                continue
            picked = choose(state, loaded[wid], {loaded[w] for w in busy})  # a busy worker has loaded its artifact
            if picked is None:
                continue
            index, job = picked
            artifact = state[index]
            artifact.pending.remove(job)
            artifact.running.add(job.key)
            busy[wid], loaded[wid] = (index, job.key), index
            given = reference.done.get(job.key) if artifact.role == "candidate" and job.reads_reference else None
            inboxes[wid].put(("job", artifact.path, artifact.role, artifact.label, job.key, given))

    def finished(wid: int, value: JobResult | str) -> None:
        index, key = busy.pop(wid)
        end_task(wid)
        state[index].running.discard(key)
        if isinstance(value, str):
            fail(index, value)
        elif state[index].error is None:
            state[index].done[key] = value

    def handle(message: tuple) -> None:
        kind, wid, *body = message
        if kind == "log":
            logging.getLogger(body[0].name).handle(body[0])
        elif kind == "task":
            end_task(wid)
            stack = contextlib.ExitStack()
            tasks[wid] = (stack, stack.enter_context(progress.task(body[0], total=body[1])))
        elif kind == "advance" and wid in tasks:
            tasks[wid][1](body[0])
        elif kind == "end":
            end_task(wid)
        elif kind in ("done", "failed"):
            finished(wid, body[0])

    try:
        dispatch()
        while busy:
            try:
                handle(outbox.get(timeout=1.0))
            except queue.Empty:
                for wid in [w for w in busy if not procs[w].is_alive()]:
                    code = procs[wid].exitcode
                    finished(
                        wid,
                        f"the worker process scoring it exited with code {code} (out of memory? set "
                        "validate.workers: 1)",
                    )
            dispatch()
        for artifact in state:
            if not artifact.over:  # every worker process exited
                fail(state.index(artifact), "not scored: every worker process exited (see the log file)")
    finally:
        for stack, _ in tasks.values():
            stack.close()
        for inbox, proc in zip(inboxes, procs):
            if proc.is_alive():
                inbox.put(("stop",))
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
    order = [job.key for job in spec.jobs]
    return {a.path: a.error if a.error is not None else {key: a.done[key] for key in order} for a in state}


class ReferenceFailed(UserError, RuntimeError):
    """The reference could not be scored in its worker (the worker's traceback is in the log file)."""


# ------------------------------------------------------------------------------------------------------ the worker


class _Forwarded(Progress):
    """A worker's progress: every task's start, advance and end, sent to the parent's display."""

    def __init__(self, wid: int, outbox):
        super().__init__(False)
        self.wid, self.outbox = wid, outbox

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "it", unit_scale: bool = False):
        self.outbox.put(("task", self.wid, description, total))
        try:
            yield lambda n=1, **_: self.outbox.put(("advance", self.wid, n))
        finally:
            self.outbox.put(("end", self.wid))


def _worker(spec: Spec, wid: int, inbox, outbox) -> None:
    """A worker process: run the jobs the parent hands it, one at a time, keeping one artifact's backend loaded."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG)
    forward = logging.handlers.QueueHandler(outbox)
    forward.enqueue = lambda record: outbox.put(("log", wid, record))
    root.addHandler(forward)

    import torch

    from ..backends import load_backend
    from .runner import evaluate_artifact, fingerprint

    torch.set_num_threads(spec.threads)
    jobs = {job.key: job for job in spec.jobs}
    numbers = {job.key: index for index, job in enumerate(spec.jobs, 1)}
    progress = _Forwarded(wid, outbox)
    reference_print = fingerprint(spec.reference)
    held: Path | None = None  # the artifact whose backends this worker keeps loaded between jobs
    backends: dict[str, Any] = {}

    def load(path: Path, engine: str):
        kind = spec.kinds[path]
        options = {"device": spec.device} if kind in ("torch", "gptq") else {"threads": spec.threads}
        return load_backend(path, kind, **options)

    def release() -> None:
        for backend in backends.values():
            if hasattr(backend, "close"):
                backend.close()
        backends.clear()

    try:
        while (message := inbox.get())[0] != "stop":
            _, path, role, label, key, given = message
            if path != held:
                release()
                held = path
            candidate = role == "candidate"
            try:
                results = evaluate_artifact(
                    path,
                    role,
                    [jobs[key]],
                    work=spec.work,
                    load=load,
                    reference_results={key: given} if given is not None else {},
                    reference_print=reference_print if candidate else None,
                    progress=progress,
                    log_file=spec.log_file,
                    label=label,
                    numbers=numbers,
                    backends=backends,
                )
            except Exception as err:  # noqa: BLE001 - the parent reports it as the serial run does
                log.debug("%s: %s failed", label, key, exc_info=True)
                outbox.put(("failed", wid, str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"))
                continue
            outbox.put(("done", wid, results[key]))
    finally:
        release()
