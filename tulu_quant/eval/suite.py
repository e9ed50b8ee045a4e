"""A suite (configs/eval/*.yaml) as a list of jobs: what to measure on every artifact, on which items.

A job names its metrics, holds everything that determines its result besides the model (its cache key: settings,
item hashes), and a ``compute(backend, role, reference_result, folder, advance) -> JobResult``. Jobs whose data is not
available are kept, marked skipped with the reason, so the report lists them. Two jobs compare a candidate with the
reference directly: ``kl`` (the reference run saves its log-probabilities) and ``alpaca`` (the reference run saves its
answers). Two need full logits, which an OpenAI-compatible server does not return (``needs_logits``): ``kl`` and
MMLU's; validate.engine vllm runs the others on the server.
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
    needs_logits: bool = False  # full next-token distributions (KL, MMLU): the native backend, never a server

    @property
    def reads_reference(self) -> bool:
        """Whether a candidate's compute reads the reference's result of this job: a comparison (KL, AlpacaFarm's
        agreement) or the perplexity pass that compares the KL windows saved by the reference's."""
        return self.uses_reference or bool(self.settings.get("kl_windows"))

    def skipped_result(self, reason: str | None = None) -> JobResult:
        reason = reason or self.skipped or "not run"
        return JobResult(self.key, [skipped(k, label, unit, hib, reason) for k, label, unit, hib in self.metrics])


# ---------------------------------------------------------------------------------------------------- compute functions


def _perplexity(key, label, windows, suite, kl, backend, role, reference, folder, advance) -> JobResult:
    """A source's perplexity. With ``kl`` (the KL windows' count and tag: this source's first windows), the same pass
    saves the reference's KL windows, or a candidate's comparison with them, for the KL job to reuse."""
    sink, files = _kl_sink(kl, backend, role, reference, folder)
    nll = perplexity.score_windows(backend, windows, advance, suite.batch_size, sink)
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
        files=files,
    )


def kl_reference_folder(folder: Path, tag: str) -> Path:
    return folder / f"kl-reference-{tag}"


def kl_compared_folder(folder: Path, reference_folder: Path, tag: str) -> Path:
    """Where a candidate's per-window comparisons with one reference's KL windows are kept (the reference folder's
    parent names the reference artifact and its fingerprint)."""
    return folder / f"kl-vs-{reference_folder.parent.name}-{tag}"


def _kl_sink(kl, backend, role, reference, folder: Path):
    """(sink for perplexity.score_windows, files of the result): the reference saves its first KL windows, a
    candidate compares with the windows its reference's perplexity pass saved. None where the pass yields no logits
    (a server backend) or the reference saved none."""
    if kl is None or hasattr(backend, "token_logprobs"):
        return None, []
    count, tag = kl
    if role == "reference":
        target = kl_reference_folder(folder, tag)

        def save(index, ids, logits):
            if index < count:
                perplexity.save_window(target, index, ids, logits)

        return save, [str(target)]
    if reference is None or not reference.files:
        return None, []
    saved = Path(reference.files[0])
    target = kl_compared_folder(folder, saved, tag)

    def compare(index, ids, logits):
        if index < count:
            perplexity.save_comparison(target, saved, index, ids, logits)

    return compare, []


def _kl(windows, tag, suite, backend, role, reference, folder: Path, advance) -> JobResult:
    if role == "reference":
        target = kl_reference_folder(folder, tag)
        perplexity.save_reference(backend, windows, target, advance, suite.batch_size)
        return JobResult("kl", [], files=[str(target)])
    saved = Path(reference.files[0])
    compared = kl_compared_folder(folder, saved, tag)
    stats = perplexity.compare_to_reference(backend, windows, saved, advance, suite.batch_size, compared)
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
    result = run(backend, advance=advance, batch_size=suite.batch_size)
    samples, seed = suite.bootstrap_samples, suite.seed
    metrics = [score_metric(key, label, result.scores, result.groups, samples, seed, result.details)]
    for suffix, scores in result.more.items():
        metrics.append(
            score_metric(f"{key}_{suffix}", f"{label} ({MORE_LABELS[suffix]})", scores, result.groups, samples, seed)
        )
    return JobResult(key, metrics, outputs=result.outputs)


MORE_LABELS = {"em": "exact match"}


def _codex_run(temperature, ks, problems, fmt, bos, suite, backend, role, reference, folder, advance) -> JobResult:
    cfg = suite.codex
    settings = GenerationSettings(
        max_new_tokens=cfg.max_new_tokens, temperature=temperature, top_p=cfg.top_p, seed=suite.seed
    )
    limits = Limits(cfg.timeout_s, cfg.memory_mb << 20)
    result = benchmarks.codex(
        backend,
        problems,
        fmt,
        cfg.chat_format,
        settings,
        cfg.samples,
        ks,
        limits,
        cfg.workers,
        bos,
        advance,
        suite.batch_size,
    )
    metrics = [
        score_metric(
            f"codex_pass{k}",
            codex_label(k, temperature, cfg.samples),
            [p["pass_at"][str(k)] for p in result.outputs],
            None,
            suite.bootstrap_samples,
            suite.seed,
            result.details,
        )
        for k in ks
    ]
    return JobResult(f"codex_t{temperature}", metrics, outputs=result.outputs)


def codex_label(k: int, temperature: float, samples: int) -> str:
    return f"Codex-Eval pass@{k} ({samples} samples, T={temperature})"


def _alpaca(rows, fmt, bos, suite, vcfg: ValidateConfig, backend, role, reference, folder, advance) -> JobResult:
    """Every artifact's answers, judged against text-davinci-003's (the win rate, with a judge); a candidate's also
    compared with the reference model's (agreement, judge-free)."""
    instructions = [row["instruction"] for row in rows]
    answers = benchmarks.generate_answers(
        backend, instructions, fmt, suite.alpaca.max_new_tokens, advance, bos, suite.batch_size
    )
    samples, seed = suite.bootstrap_samples, suite.seed
    metrics = []
    if role != "reference":
        exact, rouge = benchmarks.agreement(answers, reference.outputs)
        metrics += [
            score_metric("alpaca_exact_match", ALPACA_LABELS["alpaca_exact_match"], exact, None, samples, seed),
            score_metric("alpaca_rougeL", ALPACA_LABELS["alpaca_rougeL"], rouge, None, samples, seed),
        ]
    label = ALPACA_LABELS["alpaca_win_rate"]
    if vcfg.judge_url:
        from .judge import ANNOTATOR, win_scores

        davinci = [row["output"] for row in rows]
        judged = win_scores(
            instructions,
            answers,
            davinci,
            vcfg.judge_url,
            vcfg.judge_model,
            vcfg.judge_api_key_env,
            vcfg.judge_timeout_s,
        )
        wins = [0.5 if score is None else score for score in judged]
        details = {"judge": vcfg.judge_model, "annotator": ANNOTATOR, "unreadable_verdicts": judged.count(None)}
        metrics.append(score_metric("alpaca_win_rate", label, wins, None, samples, seed, details))
    else:
        metrics.append(skipped("alpaca_win_rate", label, "points", True, NO_JUDGE))
    return JobResult("alpaca", metrics, outputs=answers)


ALPACA_LABELS = {
    "alpaca_win_rate": "AlpacaFarm win rate vs text-davinci-003 (judge)",
    "alpaca_exact_match": "AlpacaFarm agreement with the reference model: exact match",
    "alpaca_rougeL": "AlpacaFarm agreement with the reference model: ROUGE-L",
}
NO_JUDGE = "no judge configured (validate.judge_url: an OpenAI-compatible endpoint serving a judge model)"


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
    jobs, kl_windows = [], None
    kl_spec = [
        ("kl_mean", "KL divergence, mean", "nats", False),
        ("kl_p99", "KL divergence, 99th percentile", "nats", False),
        ("top1_agreement", "top-1 agreement", "points", True),
        ("ppl_ratio", "perplexity ratio", "ratio", False),
    ]
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
        kl = None
        if cfg.kl_windows and kl_windows is None:  # KL on the first source's first windows, saved by its pass
            kl_windows = perplexity.Windows(windows.inputs[: cfg.kl_windows], windows.bos, windows.total_tokens)
            kl = (len(kl_windows.inputs), items.data_hash(kl_windows.inputs)[:12])
        settings = {
            "source": source,
            "split": cfg.split,
            "context_length": context_length,
            "bos": windows.bos,
            "windows": len(windows.inputs),
            "tokens_sha256": items.data_hash(windows.inputs),
            "kl_windows": kl[0] if kl else 0,
        }
        jobs.append(
            Job(
                key,
                label,
                spec,
                settings,
                functools.partial(_perplexity, key, label, windows, suite, kl),
                len(windows.inputs),
            )
        )
    if kl_windows is not None:
        tokens = items.data_hash(kl_windows.inputs)
        settings = {"windows": len(kl_windows.inputs), "tokens_sha256": tokens}
        jobs.append(
            Job(
                "kl",
                "KL divergence vs reference",
                kl_spec,
                settings,
                functools.partial(_kl, kl_windows, tokens[:12], suite),
                len(kl_windows.inputs),
                uses_reference=True,
                needs_logits=True,
            )
        )
    elif cfg.kl_windows:
        jobs.append(Job("kl", "KL divergence vs reference", kl_spec, skipped="no perplexity text available"))
    return jobs


def uses_bos(suite: SuiteConfig, benchmark: str) -> bool:
    """Whether the benchmark's prompts start with the tokenizer's special tokens (BOS), as protocol.bos says: under the
    protocol, only AlpacaFarm's (its June 2023 script tokenized plainly; the others with add_special_tokens=False)."""
    bos = suite.protocol.bos
    return bos == "always" or (bos == "as-protocol" and benchmark == "alpaca")


def protocol_summary(suite: SuiteConfig, vcfg: ValidateConfig) -> dict[str, str]:
    """Each benchmark's settings in one line, as the report's protocol section states them."""

    def count(n: int | None, whole: str) -> str:
        return whole if n is None else f"{n:,}"

    def bos(benchmark: str) -> str:
        return "with BOS" if uses_bos(suite, benchmark) else "no BOS (add_special_tokens=False)"

    m, g, b, t, c, a = suite.mmlu, suite.gsm, suite.bbh, suite.tydiqa, suite.codex, suite.alpaca
    passes = ", ".join(f"pass@{k} at T={temp}" for k, temp in sorted(c.temperatures.items()))
    judge = f"{vcfg.judge_model} at {vcfg.judge_url}, alpaca_eval_gpt4's prompt" if vcfg.judge_url else "no judge"
    return {
        "MMLU": f"{'/'.join(map(str, m.shots))}-shot; {count(m.subjects, 'all')} subjects, "
        f"{count(m.per_subject, 'all')} test questions each; shots from the dev split; the answer is the argmax of "
        f"the next-token logits of A-D after 'The answer is:'; prompts up to {m.max_prompt_tokens} tokens; "
        f"{bos('mmlu')}",
        "GSM8K": f"{'/'.join(g.modes)}; {count(g.examples, 'all 1,319')} test questions (random.sample after "
        f"random.seed({suite.protocol.sample_seed})); {g.shots} of Wei et al.'s exemplars; greedy up to "
        f"{g.max_new_tokens} tokens, stop at the first newline; the last number, exact match; {bos('gsm')}",
        "BBH": f"{'/'.join(b.modes)}; {count(b.tasks, 'all')} tasks, {count(b.per_task, 'all')} examples each (seed "
        f"{suite.protocol.sample_seed}); the task's 3-shot prompt; greedy up to {b.max_new_tokens} tokens, the first "
        f"paragraph, the text after 'So the answer is'; exact match, macro over tasks; {bos('bbh')}",
        "TydiQA": f"{'/'.join(t.modes)}; {count(t.per_language, 'all')} questions per language (seed "
        f"{suite.protocol.sample_seed}), {t.shots} demonstration from train; each language's templates; passages "
        f"cut to {t.max_context_tokens} tokens; greedy up to {t.max_new_tokens} tokens, stop at the first newline; "
        f"SQuAD F1 and exact match, macro over languages; {bos('tydiqa')}",
        "Codex-Eval": f"{count(c.problems, 'all 164')} HumanEval problems; {c.samples} samples each, {passes}, top_p "
        f"{c.top_p}, up to {c.max_new_tokens} tokens; {'chat format' if c.chat_format else 'no chat format'}; "
        f"unbiased pass@k; {c.timeout_s:g} s per test program; {bos('codex')}",
        "AlpacaFarm": f"{count(a.instructions, 'all 805')} AlpacaEval instructions; greedy up to {a.max_new_tokens} "
        f"tokens; win rate vs text-davinci-003's outputs: {judge}; {bos('alpaca')}",
    }


def where(vcfg: ValidateConfig):
    from ..data import data_dir
    from ..data.tasks import Where

    return Where(vcfg.data_dir.expanduser() if vcfg.data_dir else data_dir(), dict(vcfg.data))


def benchmark_jobs(suite: SuiteConfig, vcfg: ValidateConfig, fmt: str) -> list[Job]:
    """One job per benchmark setting; disabled or unreachable ones included (skipped, with the reason), so the report
    and the gates see every column of the table."""
    from ..data import tasks

    jobs: list[Job] = []
    seed, sample_seed, found = suite.seed, suite.protocol.sample_seed, where(vcfg)

    def add(key, label, run, n, settings, reason=None, more=(), needs_logits=False) -> None:
        spec = [
            (key, label, "points", True),
            *((f"{key}_{m}", f"{label} ({MORE_LABELS[m]})", "points", True) for m in more),
        ]
        if reason or run is None:
            jobs.append(Job(key, label, spec, skipped=reason or "no items"))
        else:
            settings = {**settings, "format": fmt, "bos": uses_bos(suite, key.split("_")[0])}
            compute = functools.partial(_scored, key, label, suite, run)
            jobs.append(Job(key, label, spec, settings, compute, n, needs_logits=needs_logits))

    # MMLU: every test question (or the suite's subset), k shots from the dev split.
    test, reason = _unavailable(tasks.mmlu_test, suite.mmlu.enabled)
    dev, dev_reason = _unavailable(lambda: tasks.mmlu_dev(found), suite.mmlu.enabled and any(suite.mmlu.shots))
    mmlu, shots = items.mmlu_items(test.data, dev.data if dev else None, suite.mmlu, seed) if test else ([], {})
    for k in suite.mmlu.shots:
        run = functools.partial(
            benchmarks.mmlu,
            items=mmlu,
            shots_by_subject=shots,
            k=k,
            fmt=fmt,
            max_prompt_tokens=suite.mmlu.max_prompt_tokens,
            bos=uses_bos(suite, "mmlu"),
        )
        data = {"test": test.provenance if test else None, **({"dev": dev.provenance} if k and dev else {})}
        settings = {
            "items": items.data_hash([mmlu, shots if k else {}]),
            "k": k,
            "data": data,
            "max_prompt_tokens": suite.mmlu.max_prompt_tokens,
        }
        reason_k = reason or (dev_reason if k else None)
        add(f"mmlu_{k}shot", f"MMLU {k}-shot", run, len(mmlu), settings, reason_k, needs_logits=True)

    # GSM8K, BBH, TydiQA: generative, one job per mode.
    cfg = suite.gsm
    task, reason = _unavailable(lambda: tasks.gsm8k(found), cfg.enabled)
    test, exemplars = items.gsm_items(task.data, cfg, sample_seed) if task else ([], [])
    for mode in cfg.modes:
        run = functools.partial(
            benchmarks.gsm,
            items=test,
            exemplars=exemplars,
            cot=mode == "cot",
            fmt=fmt,
            max_new_tokens=cfg.max_new_tokens,
            bos=uses_bos(suite, "gsm"),
        )
        settings = {
            "items": items.data_hash([test, exemplars]),
            "max_new_tokens": cfg.max_new_tokens,
            "data": task.provenance if task else None,
        }
        add(f"gsm_{mode}", f"GSM8K {'8-shot CoT' if mode == 'cot' else 'direct'}", run, len(test), settings, reason)

    cfg = suite.bbh
    task, reason = _unavailable(lambda: tasks.bbh(found), cfg.enabled)
    bbh, task_prompts = items.bbh_items(task.data, cfg, seed, sample_seed) if task else ([], {})
    for mode in cfg.modes:
        run = functools.partial(
            benchmarks.bbh,
            items=bbh,
            task_prompts=task_prompts,
            cot=mode == "cot",
            fmt=fmt,
            max_new_tokens=cfg.max_new_tokens,
            bos=uses_bos(suite, "bbh"),
        )
        settings = {
            "items": items.data_hash([bbh, task_prompts]),
            "max_new_tokens": cfg.max_new_tokens,
            "data": task.provenance if task else None,
        }
        add(f"bbh_{mode}", f"BBH {'CoT' if mode == 'cot' else 'direct'}", run, len(bbh), settings, reason)

    cfg = suite.tydiqa
    task, reason = _unavailable(lambda: tasks.tydiqa(found), cfg.enabled)
    qa, demos = items.tydiqa_items(task.data, cfg, sample_seed) if task else ([], {})
    for mode in cfg.modes:
        run = functools.partial(
            benchmarks.tydiqa,
            items=qa,
            shots_by_language=demos,
            with_passage=mode == "goldp",
            fmt=fmt,
            max_context_tokens=cfg.max_context_tokens,
            max_new_tokens=cfg.max_new_tokens,
            bos=uses_bos(suite, "tydiqa"),
        )
        settings = {
            "items": items.data_hash([qa, demos]),
            **cfg.model_dump(exclude={"enabled", "modes"}),
            "data": task.provenance if task else None,
        }
        label = f"TydiQA {'gold passage' if mode == 'goldp' else 'closed book'} (F1)"
        add(f"tydiqa_{mode}", label, run, len(qa), settings, reason, more=("em",))
    return jobs + codex_jobs(suite, fmt) + [alpaca_job(suite, vcfg, fmt, found)]


def codex_jobs(suite: SuiteConfig, fmt: str) -> list[Job]:
    """One job per sampling temperature: each reports the pass@k estimated from its samples (open-instruct: pass@1
    from 20 samples at T=0.1, pass@10 from 20 at T=0.8)."""
    from ..data import tasks

    cfg = suite.codex
    loaded, reason = _unavailable(tasks.humaneval, cfg.enabled)
    problems = items.codex_items(loaded.data, cfg, suite.seed) if loaded else []
    runs: dict[float, list[int]] = {}
    for k, temperature in sorted(cfg.temperatures.items()):
        runs.setdefault(temperature, []).append(k)
    jobs = []
    for temperature, ks in runs.items():
        key = f"codex_t{temperature}"
        spec = [(f"codex_pass{k}", codex_label(k, temperature, cfg.samples), "points", True) for k in ks]
        settings = {
            **cfg.model_dump(exclude={"enabled", "workers", "temperatures"}),
            "temperature": temperature,
            "ks": ks,
            "seed": suite.seed,
            "batch_size": suite.batch_size,
            "items": items.data_hash(problems),
            "format": fmt,
            "bos": uses_bos(suite, "codex"),
            "data": loaded.provenance if loaded else None,
        }
        run = functools.partial(_codex_run, temperature, ks, problems, fmt, uses_bos(suite, "codex"), suite)
        jobs.append(Job(key, f"Codex-Eval at T={temperature}", spec, settings, run, len(problems), skipped=reason))
    return jobs


def alpaca_job(suite: SuiteConfig, vcfg: ValidateConfig, fmt: str, found) -> Job:
    from ..data import tasks

    spec = [(key, label, "points", True) for key, label in ALPACA_LABELS.items()]
    loaded, reason = _unavailable(lambda: tasks.alpaca_eval(found), suite.alpaca.enabled)
    if reason:
        return Job("alpaca", "AlpacaFarm", spec, skipped=reason)
    rows = items.alpaca_items(loaded.data, suite.alpaca, suite.seed)
    settings = {
        "format": fmt,
        "items": items.data_hash(rows),
        "max_new_tokens": suite.alpaca.max_new_tokens,
        "judge": [vcfg.judge_url, vcfg.judge_model],
        "bos": uses_bos(suite, "alpaca"),
        "data": loaded.provenance,
    }
    run = functools.partial(_alpaca, rows, fmt, uses_bos(suite, "alpaca"), suite, vcfg)
    return Job("alpaca", "AlpacaFarm", spec, settings, run, len(rows), uses_reference=True)


def build_jobs(suite: SuiteConfig, vcfg: ValidateConfig, fmt: str, tokenizer, context_length: int) -> list[Job]:
    jobs = perplexity_jobs(suite, tokenizer, context_length) + benchmark_jobs(suite, vcfg, fmt)
    # Prompts depend on the chat template, tulu_quant.chat and the protocol: a change to any must not reuse answers.
    rendered = items.data_hash([prompts.chat_prompt(tokenizer, fmt, "USER", "PREFIX"), suite.protocol.model_dump()])
    for job in jobs:
        if "format" in job.settings:
            job.settings["chat_sha256"] = rendered
    return jobs
