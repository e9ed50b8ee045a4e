"""Validate artifacts against the full-precision reference: perplexity, KL divergence, benchmarks, gates, a report.

    reference, candidates  -> the same suite on each (tulu_quant.eval), resumable from the work folder
    candidate vs reference -> paired deltas with 95% intervals, gates from the config
    report_dir             -> report.json (every number), report.md (a table per candidate), report.png

Engines (validate.engine): native runs every job on the artifact's own backend; vllm runs perplexity and the
generative benchmarks on a vLLM server (one started per artifact from validate.vllm_venv, stopped at the end, its log
beside the run's; or the server validate.endpoints names) and keeps KL divergence and MMLU native, which need full
logits. An artifact vLLM will not load (ONNX; GPTQ it refuses: tulu_quant.backends.vllm_backend.vllm_refusal) runs
native, and the report says so.

A violated gate raises GateFailed after the report is written (the CLI exits non-zero and names the gate). The work
folder ``.<report>.work`` beside the report keeps each finished benchmark, so a killed or repeated run only computes
what is missing; delete it to start from scratch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends import artifact_paths, context_of, detect_kind, load_backend, model_folder
from ..checkpoint import atomic_dir, dir_size, refuse_existing
from ..config import ConfigError, RunConfig, SuiteConfig, ValidateConfig, load_suite, split_pair
from ..errors import MissingLibrary, UserError, UserValueError
from ..eval.parallel import Spec, score_in_parallel, worker_count
from ..hardware import cpu_info
from ..manifest import library_versions
from ..progress import NULL, Progress, human_seconds, measure
from . import REFERENCE, candidate_stages
from .base import Context, Stage, Step

log = logging.getLogger(__name__)

STAGE = Stage("validate", output="report", sweep="variant", requires=(("optimum", "pip install optimum"),))


class GateFailed(UserError, RuntimeError):
    """A candidate violated a quality gate; the message names each violated gate."""


class ArtifactFailed(UserError, RuntimeError):
    """A candidate could not be scored (the report holds the others); the message names each and why."""


@dataclass
class ValidateResult:
    report_dir: Path
    report: dict[str, Any]
    failed: list[str] = field(default_factory=list)  # "candidate: gate -> detail"
    seconds: float = 0.0

    def summary(self) -> str:
        parts = []
        for cand in self.report["candidates"]:
            metrics = cand["metrics"]
            shown = [
                f"{k} {metrics[k]['value']:.3g}"
                for k in ("ppl.wiki", "kl_mean", "mmlu_0shot")
                if k in metrics and metrics[k]["value"] is not None
            ]
            detail = cand["error"] if "error" in cand else ", ".join(shown)
            parts.append(f"{cand['name']}: {'passed' if cand['passed'] else 'FAILED'} ({detail})")
        return f"report in {self.report_dir} after {human_seconds(self.seconds)}; " + (
            "; ".join(parts) or "reference only"
        )


# ------------------------------------------------------------------------------------------------------ pure helpers


def fit_context(artifacts: dict[Path, str], reference: Path, cfg: ValidateConfig) -> int:
    """The perplexity window length: validate.context_length when set (an error when some artifact's backend runs
    shorter), else the reference's context cut to the shortest any artifact runs at (a GGUF backend caps it at
    gguf_backend.MAX_CONTEXT), logged, so every artifact scores the same windows."""
    limits = {path: context_of(path, kind) for path, kind in artifacts.items()}
    known = {path: n for path, n in limits.items() if n is not None}
    if cfg.context_length is not None:
        short = {path: n for path, n in known.items() if n < cfg.context_length}
        if short:
            path, n = min(short.items(), key=lambda item: item[1])
            raise ConfigError(
                f"validate.context_length {cfg.context_length} exceeds the {n} tokens {path} runs at; set it to at "
                f"most {n}, or leave it unset to fit every artifact."
            )
        return cfg.context_length
    if limits[reference] is None:
        raise ConfigError(f"{reference}: config.json has no max_position_embeddings; set validate.context_length.")
    path, fit = min(known.items(), key=lambda item: item[1])
    if fit < limits[reference]:
        log.warning(
            "validate: perplexity windows of %d tokens, not the reference's %d: %s runs at %d (set "
            "validate.context_length to choose)",
            fit,
            limits[reference],
            path,
            fit,
        )
    return fit


def evaluated_material(suite: SuiteConfig) -> list[tuple[str, str]]:
    """(source, split) of everything the suite scores, for tulu_quant.data.check_disjoint. MMLU scores its whole test
    set: the mmlu source's calibration split (its first questions per subject) included."""
    pairs = [(source, suite.perplexity.split) for source in suite.perplexity.sources]
    if suite.mmlu.enabled:
        pairs += [("mmlu", "evaluation"), ("mmlu", "calibration")]
    benchmarks = (
        ("gsm8k", suite.gsm.enabled),
        ("bbh", suite.bbh.enabled),
        ("tydiqa", suite.tydiqa.enabled),
        ("humaneval", suite.codex.enabled),
        ("alpaca_eval", suite.alpaca.enabled),
    )
    return pairs + [(name, "evaluation") for name, enabled in benchmarks if enabled]


def quantization_of(path: Path) -> dict[str, Any] | None:
    """A GPTQ folder's quantization settings (quantize_config.json, else config.json's quantization_config); a GGUF
    file's type, bits per weight, importance matrix and fallbacks (its folder's gguf.json)."""
    if path.is_file():
        record = path.parent / "gguf.json"
        files = json.loads(record.read_text()).get("files", []) if record.is_file() else []
        entry = next((f for f in files if f["file"] == path.name), None)
        keys = ("type", "bits_per_weight", "imatrix", "fallbacks", "tensor_types")
        return {"quant_method": "gguf", **{k: entry[k] for k in keys}} if entry else None
    config, quant_file = path / "config.json", path / "quantize_config.json"
    if quant_file.is_file():
        return json.loads(quant_file.read_text())
    return json.loads(config.read_text()).get("quantization_config") if config.is_file() else None


def artifact_info(path: Path) -> dict[str, Any]:
    return {"kind": detect_kind(path), "size_bytes": dir_size(path), "quantization": quantization_of(path)}


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # "native" or "vllm"
    endpoint: str | None = None  # a server the user runs; None with vllm: the run starts one
    reason: str | None = None  # why an artifact runs native under engine vllm

    def describe(self) -> str:
        if self.engine == "native":
            return "native backend" + (f" (not vLLM: {self.reason})" if self.reason else "")
        server = f"the server at {self.endpoint}" if self.endpoint else "a vLLM server this run started"
        return f"vLLM ({server}) for perplexity and generation; KL divergence and MMLU on the native backend"


def engine_plan(
    vcfg: ValidateConfig,
    artifacts: list[tuple[str, Path, str]],
    cuda_capability: tuple[int, int] | None,
    cpu_flags: frozenset[str] | None,
) -> list[EngineChoice]:
    """Per artifact (name, path, kind; the reference first), where its jobs run. validate.endpoints keys are names,
    paths, 'reference' or 'candidate' (the only candidate)."""
    from ..backends.vllm_backend import vllm_refusal

    if vcfg.endpoints and vcfg.engine != "vllm":
        raise ConfigError("validate.endpoints needs validate.engine: vllm (--engine vllm).")
    candidates = artifacts[1:]
    keys: dict[str, int] = {"reference": 0}
    if len(candidates) == 1:
        keys["candidate"] = 1
    for index, (name, path, _) in enumerate(artifacts):
        keys.update({name: index, str(path): index})
    endpoints: dict[int, str] = {}
    for key, url in vcfg.endpoints.items():
        if key not in keys:
            hint = "the only candidate" if key != "candidate" else f"one of {[a[0] for a in artifacts]}"
            raise ConfigError(
                f"validate.endpoints: '{key}' names no artifact of this run; use 'reference', a candidate's name "
                f"({[a[0] for a in candidates]}) or 'candidate' for {hint}."
            )
        endpoints[keys[key]] = url
    plan = []
    for index, (_, path, kind) in enumerate(artifacts):
        if vcfg.engine == "native":
            plan.append(EngineChoice("native"))
        elif index in endpoints:
            plan.append(EngineChoice("vllm", endpoints[index]))
        else:
            reason = vllm_refusal(kind, quantization_of(path), cuda_capability, cpu_flags)
            plan.append(EngineChoice("native", reason=reason) if reason else EngineChoice("vllm"))
    return plan


def job_engine(choice: EngineChoice):
    """The runner's engine_of for one artifact: jobs that need full logits stay native."""
    return lambda job: "native" if choice.engine == "native" or job.needs_logits else "vllm"


def cuda_capability(device: str) -> tuple[int, int] | None:
    """The CUDA device's compute capability where validate runs on CUDA (device auto or cuda), else None."""
    if device == "cpu":
        return None
    import torch

    return tuple(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None


def parallel_workers(cfg: ValidateConfig, paths: list[Path], capability: tuple[int, int] | None) -> tuple[int, int]:
    """(workers, threads each): validate.workers resolved for these artifacts on this machine
    (tulu_quant.eval.parallel.worker_count), logged."""
    import psutil

    from ..backends.gguf_backend import default_threads  # the cores this process may run on

    cores = default_threads()
    device = "cuda" if capability is not None else "cpu"
    sizes = [dir_size(path) for path in paths]
    free = psutil.virtual_memory().available
    workers, why = worker_count(cfg.workers, sizes, cores, free, device, cfg.engine)
    threads = max(1, cores // workers)
    if workers > 1:
        log.info("validate: %s, %d thread(s) each", why, threads)
    else:
        log.debug("validate: %s", why)
    return workers, threads


def unique_names(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def _metrics(results) -> dict[str, Any]:
    return {m.key: m for result in results.values() for m in result.metrics}


def _timings(results) -> dict[str, Any]:
    return {
        k: {
            "seconds": round(r.seconds, 2),
            "cached": r.cached,
            "engine": r.engine,
            "skipped": all(m.skipped for m in r.metrics) and bool(r.metrics),
        }
        for k, r in results.items()
    }


# ------------------------------------------------------------------------------------------------------ the stage


def run(
    cfg: RunConfig,
    reference: Path,
    candidates: list[Path],
    report_dir: Path,
    suite: SuiteConfig | None = None,
    force: bool = False,
    progress: Progress = NULL,
    log_file: Path | None = None,
) -> ValidateResult:
    """Score the reference and every candidate with the suite of cfg.validate (or `suite`), compare each candidate
    with the reference, apply the gates, and write report_dir. Raises GateFailed after writing when a gate fails."""
    from transformers import AutoTokenizer

    from .. import data
    from ..chat import resolve_format
    from ..eval.report import markdown, report_json, unmatched_gates
    from ..eval.runner import evaluate_artifact, fingerprint
    from ..eval.suite import build_jobs, protocol_summary

    reference, candidates, report_dir = Path(reference), [Path(c) for c in candidates], Path(report_dir)
    calibration = calibration_pairs(cfg)
    cfg = config_for_run(cfg)
    refuse_existing(report_dir, force)
    kinds = {path: detect_kind(path) for path in [reference, *candidates]}  # a clear error for a non-model folder
    suite = suite or load_suite(cfg.suite)
    evaluation = evaluated_material(suite)
    data.check_disjoint(calibration, evaluation)
    with measure() as usage:
        tokenizer = AutoTokenizer.from_pretrained(reference)
        _check_tokenizers(tokenizer, reference, candidates)
        fmt = resolve_format(cfg.chat_format, tokenizer)
        context = fit_context(kinds, reference, cfg)
        jobs = build_jobs(suite, cfg, fmt, tokenizer, context)
        missing = unmatched_gates(cfg.gates, [key for job in jobs for key, *_ in job.metrics])
        if missing:
            raise ConfigError(
                f"validate.gates: {missing} match no metric of suite '{cfg.suite}'; use keys such as "
                f"{[key for job in jobs for key, *_ in job.metrics][:8]}."
            )

        work = report_dir.parent / f".{report_dir.name}.work"
        names = unique_names([reference, *candidates])
        capability = cuda_capability(cfg.device)
        plan = engine_plan(
            cfg,
            [(name, path, kinds[path]) for name, path in zip(names, [reference, *candidates])],
            capability,
            cpu_info().flags,
        )
        _check_vllm_venv(cfg, plan)
        engines = dict(zip([reference, *candidates], plan))
        for name, choice in zip(names, plan):
            log.info("%s: %s", name, choice.describe())

        def load(path: Path, engine: str):
            if engine == "vllm":
                return vllm_backend(path, kinds[path], engines[path], cfg, capability, log_file or work / "validate")
            options = {"device": cfg.device} if kinds[path] in ("torch", "gptq") else {}
            return load_backend(path, kinds[path], **options)

        common = {"work": work, "load": load, "progress": progress, "log_file": log_file}
        labels = [f"reference {names[0]}", *names[1:]]
        workers, threads = parallel_workers(cfg, [reference, *candidates], capability)
        outcome = {}
        if workers > 1:  # every artifact scored up front, in worker processes (tulu_quant.eval.parallel)
            spec = Spec(jobs, cfg.device, reference, kinds, work, log_file, threads)
            roles = ["reference"] + ["candidate"] * len(candidates)
            outcome = score_in_parallel(spec, list(zip([reference, *candidates], roles, labels)), workers, progress)

        def scored(path: Path, role: str, label: str):
            if workers > 1:
                if isinstance(outcome[path], str):
                    raise ArtifactFailed(outcome[path])
                return outcome[path]
            comparison = {"reference_results": ref_results, "reference_print": ref_print} if role == "candidate" else {}
            return evaluate_artifact(
                path, role, jobs, label=label, engine_of=job_engine(engines[path]), **comparison, **common
            )

        ref_results = scored(reference, "reference", labels[0])
        ref_entry = {
            "name": names[0],
            "path": str(reference),
            "info": artifact_info(reference) | {"engine": plan[0].describe()},
            "metrics": _metrics(ref_results),
            "timings": _timings(ref_results),
        }
        ref_print = fingerprint(reference)
        entries = []
        for path, name in zip(candidates, names[1:]):
            try:
                results = scored(path, "candidate", name)
            except Exception as err:  # one artifact's failure must not lose the others' scores
                error = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
                log.debug("%s failed", name, exc_info=True)
                log.warning("%s: not scored (%s); validating the others", name, error)
                entries.append(_failed_entry(path, name, error, engines[path]))
                continue
            entries.append(_candidate_entry(path, name, results, ref_entry, cfg, suite, engines[path]))
        failed = [f"{e['name']}: {g.gate} -> {g.detail}" for e in entries for g in e["gates"] if g.status == "fail"]
        broken = [f"{e['name']}: {e['error']}" for e in entries if "error" in e]
        protocol = {
            "name": suite.protocol.name,
            "settings": suite.protocol.model_dump(mode="json"),
            "benchmarks": protocol_summary(suite, cfg),
            "datasets": {job.key: job.settings["data"] for job in jobs if job.settings.get("data")},
            "suite_name": cfg.suite,
            "suite": suite.model_dump(mode="json"),
            "chat_format": fmt,
            "context_length": context,
            "calibration": [list(p) for p in calibration],
            "evaluation": evaluation,
            "validate": cfg.model_dump(mode="json"),
            "jobs": [job.key for job in jobs],
            "data": {job.key: job.settings for job in jobs},
            "skipped": {job.key: job.skipped for job in jobs if job.skipped},
            "sources": {
                s: data.get_source(s).describe([suite.perplexity.split])
                for s in suite.perplexity.sources
                if not any(j.skipped for j in jobs if j.key == f"ppl.{s}")
            },
        }
        report = report_json(ref_entry, entries, protocol, library_versions())
        _write(report_dir, report, markdown(ref_entry, entries, protocol), entries, force)
    result = ValidateResult(report_dir, report, failed, usage.seconds)
    log.info(result.summary())
    if broken:
        raise ArtifactFailed(
            f"{len(broken)} artifact(s) could not be scored (the others are in {report_dir / 'report.md'}; a rerun "
            "reuses every finished score): " + "; ".join(broken + failed)
        )
    if failed:
        raise GateFailed(
            f"{len(failed)} quality gate(s) violated (see {report_dir / 'report.md'}): " + "; ".join(failed)
        )
    return result


def _candidate_entry(
    path: Path,
    name: str,
    results,
    ref_entry: dict[str, Any],
    cfg: ValidateConfig,
    suite: SuiteConfig,
    engine: EngineChoice,
) -> dict[str, Any]:
    """A candidate's metrics, its paired deltas against the reference and its gate outcomes."""
    from ..eval.report import check_gates
    from ..eval.results import compare

    metrics = _metrics(results)
    deltas = {}
    for key, metric in metrics.items():
        if key in ref_entry["metrics"]:
            delta = compare(ref_entry["metrics"][key], metric, suite.bootstrap_samples, suite.seed)
            if delta is not None:
                deltas[key] = delta
    return {
        "name": name,
        "path": str(path),
        "info": artifact_info(path) | {"engine": engine.describe()},
        "metrics": metrics,
        "deltas": deltas,
        "gates": check_gates(cfg.gates, metrics, deltas),
        "timings": _timings(results),
    }


def _failed_entry(path: Path, name: str, error: str, engine: EngineChoice) -> dict[str, Any]:
    """A candidate that could not be scored: no metrics, its error sentence, failed."""
    return {
        "name": name,
        "path": str(path),
        "info": artifact_info(path) | {"engine": engine.describe()},
        "metrics": {},
        "deltas": {},
        "gates": [],
        "timings": {},
        "error": error,
    }


def _check_vllm_venv(cfg: ValidateConfig, plan: list[EngineChoice]) -> None:
    """A server to start needs the vLLM environment: say so before any work, not after the native jobs."""
    python = Path(cfg.vllm_venv).expanduser() / "bin" / "python"
    if any(c.engine == "vllm" and not c.endpoint for c in plan) and not python.is_file():
        raise MissingLibrary(
            f"{python} does not exist: validate.engine vllm starts its servers from validate.vllm_venv; run `make "
            "vllm` in the checkout (or set validate.vllm_venv), or pass --endpoint for a server you run."
        )


def vllm_backend(path: Path, kind: str, choice: EngineChoice, cfg: ValidateConfig, capability, log_file: Path):
    """The vLLM backend of one artifact: the user's server, or one started here (its log beside the run's log)."""
    from ..backends.vllm_backend import VllmBackend, serve

    if choice.endpoint:
        return VllmBackend(path, choice.endpoint)
    server_log = Path(log_file).with_name(f"vllm-{Path(path).name}.log")
    # the server's context is the model's (max_position_embeddings), as the native backends', so prompts fit alike
    return serve(path, kind, server_log, cfg.vllm_venv, cfg.vllm_kv_cache_gib, cuda=capability is not None)


def _check_tokenizers(tokenizer, reference: Path, candidates: list[Path]) -> None:
    """Perplexity windows and KL compare token by token: every candidate must tokenize as the reference does."""
    from transformers import AutoTokenizer

    vocab = tokenizer.get_vocab()
    for path in candidates:
        if AutoTokenizer.from_pretrained(model_folder(path)).get_vocab() != vocab:
            raise UserValueError(
                f"{path}: its tokenizer differs from the reference's ({reference}); validate compares "
                "artifacts of one model, which share a tokenizer."
            )


def _write(report_dir: Path, report: dict[str, Any], md: str, entries: list[dict[str, Any]], force: bool) -> None:
    from ..eval.chart import write_chart
    from ..eval.report import write_json

    with atomic_dir(report_dir, force) as tmp:
        write_json(tmp / "report.json", report)
        (tmp / "report.md").write_text(md)
        if not write_chart(tmp / "report.png", entries) and entries:
            log.warning("report.png not drawn: matplotlib is not installed (pip install matplotlib)")


# ------------------------------------------------------------------------------------------------------ pipeline


def calibration_pairs(cfg: RunConfig) -> list[tuple[str, str]]:
    """(source, split) of what the artifacts were calibrated on, never scored: calibrate.mix + validate.calibration."""
    return list(dict.fromkeys(cfg.calibrate.splits + [split_pair(p) for p in cfg.validate_.calibration]))


def config_for_run(cfg: RunConfig) -> ValidateConfig:
    """The run's validate: settings with the model's context length and chat format filled in."""
    updates = {"context_length": cfg.validate_.context_length or cfg.model.context_length}
    if cfg.validate_.chat_format == "auto":
        updates["chat_format"] = cfg.model.chat_format
    return cfg.validate_.model_copy(update=updates)


def step(cfg: RunConfig, ctx: Context) -> Step:
    """The pipeline's validate: the reference (RUN_DIR/recovered) against every artifact this run's stages made."""
    reference = ctx.produced(REFERENCE)
    candidates = [
        artifact
        for name in candidate_stages()
        if name in cfg.stages and (path := ctx.recorded(name))
        for artifact in artifact_paths(path)
    ]
    vcfg = config_for_run(cfg)
    suite = load_suite(vcfg.suite)
    calibration = calibration_pairs(cfg)
    out = ctx.out(STAGE)

    def work() -> dict[str, Any]:
        result = run(cfg, reference, candidates, out, suite, force=True, progress=ctx.progress, log_file=ctx.log_file)
        return {
            "candidates": {
                c["name"]: {k: m["value"] for k, m in c["metrics"].items()} | {"passed": c["passed"]}
                for c in result.report["candidates"]
            },
            "reference": {k: m["value"] for k, m in result.report["reference"]["metrics"].items()},
        }

    config = {
        "validate": vcfg.model_dump(mode="json"),
        "suite": suite.model_dump(mode="json"),
        "calibration": calibration,
    }
    return Step(
        STAGE.name,
        [reference, *candidates],
        [out],
        config,
        work,
        lambda s: ", ".join(f"{n}: {'passed' if v['passed'] else 'FAILED'}" for n, v in s["candidates"].items()),
    )
