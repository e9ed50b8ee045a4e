"""A suite (configs/eval/*.yaml) as a list of jobs: what to measure on every artifact, on which items.

A job names its metrics, holds everything that determines its result besides the model (its cache key: settings,
item hashes), and a ``compute(backend, role, reference_result, folder, advance) -> JobResult``. Jobs whose data is not
available are kept, marked skipped with the reason, so the report lists them. Two jobs compare a candidate with the
reference directly: ``kl`` (the reference run saves its log-probabilities) and ``alpaca`` (the reference run saves its
answers).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import GenerationSettings, SuiteConfig, ValidateConfig
from . import benchmarks, items, perplexity, prompts
from .results import JobResult, Metric, perplexity_metric, score_metric, skipped
from .sandbox import Limits

log = logging.getLogger(__name__)

MetricSpec = tuple[str, str, str, bool]  # key, label, unit, higher is better


@dataclass
class Job:
    key: str
    label: str
    metrics: list[MetricSpec]
    settings: dict[str, Any] = field(default_factory=dict)
    compute: Callable[..., JobResult] | None = None
    total: int = 0
    uses_reference: bool = False
    skipped: str | None = None

    def skipped_result(self, reason: str | None = None) -> JobResult:
        reason = reason or self.skipped or "not run"
        return JobResult(self.key, [skipped(k, label, unit, hib, reason) for k, label, unit, hib in self.metrics])


# ---------------------------------------------------------------------------------------------------- compute functions


def _perplexity(key, label, windows, suite, backend, role, reference, folder, advance) -> JobResult:
    nll = perplexity.score_windows(backend, windows, advance)
    return JobResult(
        key,
        [
            perplexity_metric(
                key,
                label,
                list(nll),
                windows.scored_per_window,
                suite.bootstrap_samples,
                suite.seed,
                {"bos": windows.bos, "text_tokens": windows.total_tokens},
            )
        ],
    )


def _kl(windows, backend, role, reference, folder: Path, advance) -> JobResult:
    if role == "reference":
        perplexity.save_reference(backend, windows, folder / "kl-reference", advance)
        return JobResult("kl", [], files=[str(folder / "kl-reference")])
    stats = perplexity.compare_to_reference(backend, windows, Path(reference.files[0]), advance)
    half = 1.959963984540054 * stats["kl_mean_stderr"]
    details = {
        "tokens": stats["tokens"],
        "kl_median": stats["kl_median"],
        "kl_max": stats["kl_max"],
        "windows": len(windows.inputs),
    }
    return JobResult(
        "kl",
        [
            Metric(
                "kl_mean",
                "KL divergence, mean",
                "nats",
                False,
                stats["kl_mean"],
                stats["tokens"],
                [stats["kl_mean"] - half, stats["kl_mean"] + half],
                "mean +- 1.96 standard errors",
                details=details,
            ),
            Metric("kl_p99", "KL divergence, 99th percentile", "nats", False, stats["kl_p99"], stats["tokens"]),
            Metric("top1_agreement", "top-1 agreement", "points", True, stats["top1_agreement"], stats["tokens"]),
            Metric(
                "ppl_ratio", "perplexity ratio on the KL tokens", "ratio", False, stats["ppl_ratio"], stats["tokens"]
            ),
        ],
    )


def _scored(key, label, suite, run, backend, role, reference, folder, advance) -> JobResult:
    result = run(backend, advance=advance)
    metric = score_metric(key, label, result.scores, result.groups, suite.bootstrap_samples, suite.seed, result.details)
    return JobResult(key, [metric], outputs=result.outputs)


def _codex_sampled(ks, problems, fmt, suite, backend, role, reference, folder, advance) -> JobResult:
    cfg = suite.codex
    settings = GenerationSettings(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        repetition_penalty=1.0,
        seed=suite.seed,
    )
    limits = Limits(cfg.timeout_s, cfg.memory_mb << 20)
    result = benchmarks.codex(backend, problems, fmt, settings, cfg.samples, ks, limits, cfg.workers, advance)
    metrics = [
        score_metric(
            f"codex_pass{k}",
            f"Codex-Eval pass@{k} (T={cfg.temperature})",
            [p["pass_at"][str(k)] for p in result.outputs],
            None,
            suite.bootstrap_samples,
            suite.seed,
            result.details,
        )
        for k in ks
    ]
    return JobResult("codex_sampled", metrics, outputs=result.outputs)


def _alpaca(instructions, fmt, suite, vcfg: ValidateConfig, backend, role, reference, folder, advance) -> JobResult:
    answers = benchmarks.generate_answers(backend, instructions, fmt, suite.alpaca.max_new_tokens, advance)
    if role == "reference":
        return JobResult("alpaca", [], outputs=answers)
    exact, rouge = benchmarks.agreement(answers, reference.outputs)
    metrics = [
        score_metric(
            "alpaca_exact_match", "AlpacaFarm agreement: exact match", exact, None, suite.bootstrap_samples, suite.seed
        ),
        score_metric(
            "alpaca_rougeL", "AlpacaFarm agreement: ROUGE-L", rouge, None, suite.bootstrap_samples, suite.seed
        ),
    ]
    if vcfg.judge_url:
        from .judge import win_scores

        wins = win_scores(
            instructions,
            answers,
            reference.outputs,
            vcfg.judge_url,
            vcfg.judge_model,
            vcfg.judge_api_key_env,
            vcfg.judge_timeout_s,
            suite.seed,
        )
        metrics.append(
            score_metric(
                "alpaca_win_rate",
                "AlpacaFarm win rate vs reference (judge)",
                wins,
                None,
                suite.bootstrap_samples,
                suite.seed,
                {"judge": vcfg.judge_model},
            )
        )
    else:
        metrics.append(
            skipped(
                "alpaca_win_rate",
                "AlpacaFarm win rate vs reference (judge)",
                "points",
                True,
                "no judge endpoint configured (validate.judge_url)",
            )
        )
    return JobResult("alpaca", metrics, outputs=answers)


# ------------------------------------------------------------------------------------------------------ building jobs


DISABLED = "disabled in the suite"


def _unavailable(loader: Callable[[], Any], enabled: bool = True) -> tuple[Any, str | None]:
    """(data, None), or (None, reason) when the benchmark is disabled or tulu_quant.data cannot reach the data set."""
    from ..data import DataUnavailable
    from ..fetch import FetchError

    if not enabled:
        return None, DISABLED
    try:
        return loader(), None
    except (DataUnavailable, FetchError) as err:
        return None, str(err)


def perplexity_jobs(suite: SuiteConfig, tokenizer, context_length: int) -> list[Job]:
    from ..data import get_source

    cfg = suite.perplexity
    bos = perplexity.bos_id_of(tokenizer)
    jobs, first_windows = [], None
    for source in cfg.sources:
        key, label = f"ppl.{source}", f"perplexity ({source}, {cfg.split})"
        documents, reason = _unavailable(lambda source=source: get_source(source).documents(cfg.split))
        windows = (
            perplexity.make_windows(
                perplexity.tokenize_documents(tokenizer, documents),
                context_length,
                bos,
                cfg.source_windows.get(source, cfg.max_windows),
            )
            if documents
            else None
        )
        if windows is not None and not windows.inputs:
            reason = f"the {source} {cfg.split} text is shorter than one window of {context_length} tokens"
        spec = [(key, label, "ppl", False)]
        if reason:
            jobs.append(Job(key, label, spec, skipped=reason))
            continue
        first_windows = first_windows or windows
        settings = {
            "source": source,
            "split": cfg.split,
            "context_length": context_length,
            "bos": windows.bos,
            "windows": len(windows.inputs),
            "tokens_sha256": items.data_hash(windows.inputs),
        }
        jobs.append(
            Job(
                key,
                label,
                spec,
                settings,
                functools.partial(_perplexity, key, label, windows, suite),
                len(windows.inputs),
            )
        )
    kl_spec = [
        ("kl_mean", "KL divergence, mean", "nats", False),
        ("kl_p99", "KL divergence, 99th percentile", "nats", False),
        ("top1_agreement", "top-1 agreement", "points", True),
        ("ppl_ratio", "perplexity ratio", "ratio", False),
    ]
    if cfg.kl_windows and first_windows is not None:
        kl_windows = perplexity.Windows(
            first_windows.inputs[: cfg.kl_windows], first_windows.bos, first_windows.total_tokens
        )
        settings = {"windows": len(kl_windows.inputs), "tokens_sha256": items.data_hash(kl_windows.inputs)}
        jobs.append(
            Job(
                "kl",
                "KL divergence vs reference",
                kl_spec,
                settings,
                functools.partial(_kl, kl_windows),
                len(kl_windows.inputs),
                uses_reference=True,
            )
        )
    elif cfg.kl_windows:
        jobs.append(Job("kl", "KL divergence vs reference", kl_spec, skipped="no perplexity text available"))
    return jobs


def benchmark_jobs(suite: SuiteConfig, vcfg: ValidateConfig, fmt: str) -> list[Job]:
    """One job per benchmark setting; disabled or unreachable ones included (skipped), so the report and the gates
    see every column of the table."""
    from .. import data

    jobs: list[Job] = []
    seed = suite.seed

    def add(key: str, label: str, run: Callable | None, n: int, settings: dict, reason: str | None = None) -> None:
        spec = [(key, label, "points", True)]
        if reason or run is None:
            jobs.append(Job(key, label, spec, skipped=reason or "no items"))
        else:
            jobs.append(
                Job(
                    key, label, spec, {**settings, "format": fmt}, functools.partial(_scored, key, label, suite, run), n
                )
            )

    records, reason = _unavailable(data.load_mmlu, suite.mmlu.enabled)
    mmlu, shots = items.mmlu_items(records, suite.mmlu, seed) if records else ([], {})
    for k in suite.mmlu.shots:
        run = functools.partial(
            benchmarks.mmlu,
            items=mmlu,
            shots_by_subject=shots,
            k=k,
            fmt=fmt,
            max_prompt_tokens=suite.mmlu.max_prompt_tokens,
        )
        add(
            f"mmlu_{k}shot",
            f"MMLU {k}-shot",
            run,
            len(mmlu),
            {"items": items.data_hash([mmlu, shots]), "k": k, "max_prompt_tokens": suite.mmlu.max_prompt_tokens},
            reason,
        )

    def add_modes(key, labels, fn, modes, flag, n, hashed, reason, settings, **kwargs) -> None:
        """One job per mode of a generative benchmark; `flag` (e.g. cot=True) is the mode's argument of fn."""
        for mode in modes:
            run = functools.partial(fn, fmt=fmt, **{flag[0]: mode == flag[1]}, **kwargs)
            add(f"{key}_{mode}", labels[mode], run, n, {"items": hashed, **settings}, reason)

    cfg = suite.gsm
    task, reason = _unavailable(lambda: data.load_task("gsm8k"), cfg.enabled)
    test, exemplars = items.gsm_items(task, cfg, seed) if task else ([], [])
    labels = {"cot": "GSM8K 8-shot CoT", "direct": "GSM8K direct"}
    add_modes(
        "gsm",
        labels,
        benchmarks.gsm,
        cfg.modes,
        ("cot", "cot"),
        len(test),
        items.data_hash([test, exemplars]),
        reason,
        {"max_new_tokens": cfg.max_new_tokens},
        items=test,
        exemplars=exemplars,
        max_new_tokens=cfg.max_new_tokens,
    )
    cfg = suite.bbh
    task, reason = _unavailable(lambda: data.load_task("bbh"), cfg.enabled)
    bbh, task_prompts = items.bbh_items(task, cfg, seed) if task else ([], {})
    add_modes(
        "bbh",
        {"cot": "BBH CoT", "direct": "BBH direct"},
        benchmarks.bbh,
        cfg.modes,
        ("cot", "cot"),
        len(bbh),
        items.data_hash([bbh, task_prompts]),
        reason,
        {"max_new_tokens": cfg.max_new_tokens},
        items=bbh,
        task_prompts=task_prompts,
        max_new_tokens=cfg.max_new_tokens,
    )
    cfg = suite.tydiqa
    task, reason = _unavailable(lambda: data.load_task("tydiqa"), cfg.enabled)
    qa, shots = items.tydiqa_items(task, cfg, seed) if task else ([], {})
    labels = {"goldp": "TydiQA gold passage (F1)", "closedbook": "TydiQA closed book (F1)"}
    add_modes(
        "tydiqa",
        labels,
        benchmarks.tydiqa,
        cfg.modes,
        ("with_passage", "goldp"),
        len(qa),
        items.data_hash([qa, shots]),
        reason,
        cfg.model_dump(exclude={"enabled", "modes"}),
        items=qa,
        shots_by_language=shots,
        max_context_tokens=cfg.max_context_tokens,
        max_new_tokens=cfg.max_new_tokens,
    )
    return jobs + codex_jobs(suite, fmt) + [alpaca_job(suite, vcfg, fmt)]


def codex_jobs(suite: SuiteConfig, fmt: str) -> list[Job]:
    from .. import data

    cfg = suite.codex
    problems, reason = _unavailable(data.load_humaneval, cfg.enabled)
    greedy, sampled = items.codex_items(problems, cfg, suite.seed) if problems else ([], [])
    limits = Limits(cfg.timeout_s, cfg.memory_mb << 20)
    run = functools.partial(
        benchmarks.codex,
        problems=greedy,
        fmt=fmt,
        settings=GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=0.0),
        samples=1,
        ks=[1],
        limits=limits,
        workers=cfg.workers,
    )
    spec = [("codex_pass1", "Codex-Eval pass@1 (greedy)", "points", True)]
    common = {
        "format": fmt,
        "max_new_tokens": cfg.max_new_tokens,
        "timeout_s": cfg.timeout_s,
        "memory_mb": cfg.memory_mb,
    }
    jobs = [
        Job(
            "codex_pass1",
            spec[0][1],
            spec,
            {**common, "items": items.data_hash(greedy)},
            functools.partial(_scored, "codex_pass1", spec[0][1], suite, run),
            len(greedy),
            skipped=reason,
        )
    ]
    if cfg.pass_at:
        ks = sorted(set(cfg.pass_at))
        spec_k = [(f"codex_pass{k}", f"Codex-Eval pass@{k} (T={cfg.temperature})", "points", True) for k in ks]
        settings = {
            **common,
            **cfg.model_dump(exclude={"enabled", "workers"}),
            "seed": suite.seed,
            "items": items.data_hash(sampled),
        }
        jobs.append(
            Job(
                "codex_sampled",
                "Codex-Eval sampled pass@k",
                spec_k,
                settings,
                functools.partial(_codex_sampled, ks, sampled, fmt, suite),
                len(sampled),
                skipped=reason,
            )
        )
    return jobs


def alpaca_job(suite: SuiteConfig, vcfg: ValidateConfig, fmt: str) -> Job:
    from ..data import get_source

    spec = [
        ("alpaca_exact_match", "AlpacaFarm agreement: exact match", "points", True),
        ("alpaca_rougeL", "AlpacaFarm agreement: ROUGE-L", "points", True),
        ("alpaca_win_rate", "AlpacaFarm win rate vs reference (judge)", "points", True),
    ]
    if not suite.alpaca.enabled:
        return Job("alpaca", "AlpacaFarm", spec, skipped=DISABLED)
    documents: list[str] = []
    if suite.alpaca.instructions_file is None:
        for source in suite.perplexity.sources:
            found, _ = _unavailable(lambda source=source: get_source(source).documents(suite.perplexity.split))
            documents += found or []
    instructions = items.alpaca_instructions(suite.alpaca, documents, suite.seed)
    settings = {
        "format": fmt,
        "items": items.data_hash(instructions),
        "max_new_tokens": suite.alpaca.max_new_tokens,
        "judge": [vcfg.judge_url, vcfg.judge_model],
    }
    if not instructions:
        return Job("alpaca", "AlpacaFarm", spec, skipped="no held-out instructions available")
    return Job(
        "alpaca",
        "AlpacaFarm",
        spec,
        settings,
        functools.partial(_alpaca, instructions, fmt, suite, vcfg),
        len(instructions),
        uses_reference=True,
    )


def build_jobs(suite: SuiteConfig, vcfg: ValidateConfig, fmt: str, tokenizer, context_length: int) -> list[Job]:
    jobs = perplexity_jobs(suite, tokenizer, context_length) + benchmark_jobs(suite, vcfg, fmt)
    # Prompts depend on the chat template and on tulu_quant.chat: a change to either must not reuse cached answers.
    rendered = items.data_hash(prompts.chat_prompt(tokenizer, fmt, "USER", "PREFIX"))
    for job in jobs:
        if "format" in job.settings:
            job.settings["chat_sha256"] = rendered
    return jobs
