"""The benchmark loops of the open-instruct-2023-06 protocol: prepared items in, one score per item out.

Each function takes a backend, the items the suite drew, the chat format and its settings, and returns a ``Scored``:
per-item scores in [0, 1] (in item order, so two models compare item by item), optional groups (task or language, for
macro averages), more per-item scores under other metric names (TydiQA's exact match), the raw outputs, and counters
worth reporting. Nothing here loads data or knows about caching. ``bos`` says whether prompts start with the
tokenizer's special tokens (the protocol's setting, resolved by the suite). Each builds all its prompts first and hands
them to eval.decode's batched calls, ``batch_size`` at a time ("auto": from free memory).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..config import GenerationSettings
from . import prompts, text_metrics
from .decode import complete_many, encode, last_logits_many, letter_ids
from .sandbox import Limits, humaneval_program, run_program
from .stats import pass_at_k

Advance = Callable[..., None]


@dataclass
class Scored:
    scores: list[float]
    groups: list[str] | None = None
    outputs: list[Any] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    more: dict[str, list[float]] = field(default_factory=dict)  # metric key suffix -> per-item scores


def _greedy(max_new_tokens: int) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0)


# ------------------------------------------------------------------------------------------------------ MMLU


def mmlu(
    backend,
    items: list[dict],
    shots_by_subject: dict[str, list[dict]],
    k: int,
    fmt: str,
    max_prompt_tokens: int,
    bos: bool,
    advance: Advance,
    batch_size: int | str = 1,
) -> Scored:
    """Answer letter = argmax of the next-token logits over " A".." D" after "The answer is:". k dev-split shots; fewer
    while the prompt, before the chat format, is longer than max_prompt_tokens (open-instruct)."""
    tokenizer = backend.tokenizer
    choice_ids = letter_ids(tokenizer, prompts.CHOICES)
    seqs, reduced = [], 0
    for item in items:
        shots = shots_by_subject.get(item["subject"], [])[:k]
        user = prompts.mmlu_user(item["subject"], shots, item)
        while shots and len(encode(tokenizer, user, False)) > max_prompt_tokens:
            shots = shots[:-1]
            user = prompts.mmlu_user(item["subject"], shots, item)
        reduced += len(shots) < k
        ids = encode(tokenizer, prompts.chat_prompt(tokenizer, fmt, user, prompts.MMLU_PREFIX, strip=True), bos)
        seqs.append(ids[-backend.context_length :])
    last = last_logits_many(backend, seqs, batch_size, advance)
    outputs = [prompts.CHOICES[int(row[choice_ids].argmax())] for row in last]
    scores = [float(output == item["answer"]) for output, item in zip(outputs, items)]
    return Scored(scores, outputs=outputs, details={"prompts_with_fewer_shots": reduced})


# ----------------------------------------------------------------------------------------------------- generation tasks


def gsm(
    backend,
    items: list[dict],
    exemplars: list[dict],
    cot: bool,
    fmt: str,
    max_new_tokens: int,
    bos: bool,
    advance: Advance,
    batch_size: int | str = 1,
) -> Scored:
    """Greedy answer cut at its first newline (open-instruct stops at the newline token, in the chat format too); the
    last number of it must equal the target (exact match, case and punctuation ignored)."""
    texts = [
        prompts.chat_prompt(
            backend.tokenizer, fmt, prompts.gsm_user(item["question"], exemplars, cot), prompts.GSM_PREFIX
        )
        for item in items
    ]
    done = complete_many(backend, texts, _greedy(max_new_tokens), bos, ("\n",), batch_size=batch_size, advance=advance)
    outputs = [output for output, _ in done]
    scores = [
        text_metrics.exact_match(text_metrics.last_number(output), text_metrics.gsm_target(item["answer"]))
        for output, item in zip(outputs, items)
    ]
    return Scored(scores, outputs=outputs, details={"truncated_prompts": sum(cut for _, cut in done)})


def bbh(
    backend,
    items: list[dict],
    task_prompts: dict[str, str],
    cot: bool,
    fmt: str,
    max_new_tokens: int,
    bos: bool,
    advance: Advance,
    batch_size: int | str = 1,
) -> Scored:
    """Items carry task, input, target. The answer is the output's first paragraph, and within it the text after 'So
    the answer is' up to the next period when there is one (exact match, case and punctuation ignored). Generation
    ends with that first paragraph (open-instruct generates on and then keeps it). Macro average over tasks."""
    texts = []
    for item in items:
        task_prompt = task_prompts[item["task"]]
        task_prompt = task_prompt if cot else text_metrics.bbh_direct_prompt(task_prompt)
        user = prompts.bbh_user(task_prompt, item["input"])
        texts.append(prompts.chat_prompt(backend.tokenizer, fmt, user, prompts.BBH_PREFIX))
    settings = _greedy(max_new_tokens)
    done = complete_many(backend, texts, settings, bos, first_paragraph=True, batch_size=batch_size, advance=advance)
    outputs = [output for output, _ in done]
    scores = [text_metrics.exact_match(text_metrics.bbh_answer(o), item["target"]) for o, item in zip(outputs, items)]
    groups = [item["task"] for item in items]
    return Scored(scores, groups, outputs, {"truncated_prompts": sum(cut for _, cut in done)})


def tydiqa_passage(tokenizer, context: str, max_tokens: int) -> str:
    """open-instruct's passage cut: the passage encoded with the tokenizer's special tokens (LLaMA's BOS counts toward
    the limit) and, when longer, its first max_tokens tokens decoded back (special tokens included)."""
    ids = tokenizer(context).input_ids
    return tokenizer.decode(ids[:max_tokens]) if len(ids) > max_tokens else context


def tydiqa(
    backend,
    items: list[dict],
    shots_by_language: dict[str, list[dict]],
    with_passage: bool,
    fmt: str,
    max_context_tokens: int,
    max_new_tokens: int,
    bos: bool,
    advance: Advance,
    batch_size: int | str = 1,
) -> Scored:
    """SQuAD F1 (and exact match) of a greedy short answer cut at its first newline, in each language's own prompt;
    passages cut to max_context_tokens; macro average over languages."""
    tokenizer = backend.tokenizer

    def cut(record: dict) -> dict:
        return {**record, "context": tydiqa_passage(tokenizer, record["context"], max_context_tokens)}

    texts = []
    for item in items:
        shots = [cut(s) for s in shots_by_language.get(item["lang"], [])]
        user, prefix = prompts.tydiqa_user(cut(item) if with_passage else item, shots, with_passage)
        texts.append(prompts.chat_prompt(tokenizer, fmt, user, prefix, strip=True))
    done = complete_many(backend, texts, _greedy(max_new_tokens), bos, ("\n",), batch_size=batch_size, advance=advance)
    outputs = [output.strip() for output, _ in done]
    f1 = [text_metrics.squad_f1(output, item["answers"]) for output, item in zip(outputs, items)]
    em = [text_metrics.squad_exact(output, item["answers"]) for output, item in zip(outputs, items)]
    return Scored(f1, [item["lang"] for item in items], outputs, more={"em": em})


# ------------------------------------------------------------------------------------------------------ Codex-Eval


def codex(
    backend,
    problems: list[dict],
    fmt: str,
    chat: bool,
    settings: GenerationSettings,
    samples: int,
    ks: list[int],
    limits: Limits,
    workers: int,
    bos: bool,
    advance: Advance,
    batch_size: int | str = 1,
) -> Scored:
    """Sample `samples` completions per HumanEval problem (seeded per batch of samples), run each with the problem's
    tests in the sandbox (prompt + completion + tests + check(entry_point)), and score each problem with the unbiased
    pass@k estimator for each k (scores are pass@ks[0])."""
    per_problem: list[dict[str, Any]] = []
    statuses: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for index, problem in enumerate(problems):
            text = prompts.codex_prompt(backend.tokenizer, fmt, problem["prompt"], chat)
            seed = None if settings.seed is None else settings.seed + 1000 * index
            seeded = settings.model_copy(update={"seed": seed})
            done = complete_many(backend, [text] * samples, seeded, bos, prompts.CODEX_STOPS, batch_size=batch_size)
            completions = [completion for completion, _ in done]
            outcomes = list(
                pool.map(lambda c, problem=problem: run_program(humaneval_program(problem, c), limits), completions)
            )
            for outcome in outcomes:
                statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
            correct = sum(o.passed for o in outcomes)
            per_problem.append(
                {
                    "task_id": problem["task_id"],
                    "correct": correct,
                    "n": samples,
                    "pass_at": {str(k): pass_at_k(samples, correct, k) for k in ks},
                    "first_completion": completions[0],
                    "first_status": outcomes[0].status,
                }
            )
            advance(1)
    scores = [p["pass_at"][str(ks[0])] for p in per_problem]
    return Scored(scores, outputs=per_problem, details={"statuses": statuses, "samples_per_problem": samples})


# ------------------------------------------------------------------------------------------------------ AlpacaFarm


def generate_answers(
    backend,
    instructions: list[str],
    fmt: str,
    max_new_tokens: int,
    advance: Advance,
    bos: bool = True,
    batch_size: int | str = 1,
) -> list[str]:
    """Greedy answers to each instruction (the prompt starts with the tokenizer's special tokens, as open-instruct's
    AlpacaFarm script and `tulu-quant generate` encode it), cut where the model would start another turn."""
    from ..chat import stop_strings

    texts = [prompts.chat_prompt(backend.tokenizer, fmt, instruction) for instruction in instructions]
    stops = tuple(stop_strings(fmt))
    done = complete_many(backend, texts, _greedy(max_new_tokens), bos, stops, batch_size=batch_size, advance=advance)
    return [answer.strip() for answer, _ in done]


def agreement(candidate: list[str], reference: list[str]) -> tuple[list[float], list[float]]:
    """(exact-match per item, ROUGE-L per item) of the candidate's answers against the reference's."""
    exact = [float(text_metrics.normalized(c) == text_metrics.normalized(r)) for c, r in zip(candidate, reference)]
    rouge = [text_metrics.rouge_l(c, r) for c, r in zip(candidate, reference)]
    return exact, rouge
