"""Pairwise judging with alpaca_eval's `alpaca_eval_gpt4` annotator, through any OpenAI-compatible chat endpoint.

The annotator's prompt is alpaca_eval's own file, fetched at run time from the pinned alpaca-eval wheel (never copied
into this repository). Each instruction is shown with two answers as "model_1" and "model_2": the reference
(text-davinci-003) is output_1 and the evaluated model output_2, swapped or not by alpaca_eval's own seeded choice
(`random.Random("is_switched_outputs" + instruction + "123")`), so the same item gets the same order as in alpaca_eval
and a judge's position bias cancels out on average. The judge replies with a Python list of ranks; the rank of
"model_1" is the preference (1: reference wins, 2: model wins), undone for swapped items. Identical answers tie
without asking. The win rate is alpaca_eval's: the mean of (preference - 1) over items, ties 0.5, times 100. A reply
that is not a ranking is None here: alpaca_eval drops such items, the suite counts them as ties (so that deltas between
artifacts stay paired item by item) and reports how many there were.

Completion settings are the annotator's: temperature 0, at most 100 tokens, one item per request. HTTP through
tulu_quant.openai_api; the API key, when the configured environment variable holds one, is a Bearer token.
"""

from __future__ import annotations

import ast
import logging
import os
import random

from ..errors import UserError
from ..fetch import Pinned, fetch
from ..openai_api import post_json

log = logging.getLogger(__name__)

ANNOTATOR = "alpaca_eval_gpt4"
ANNOTATOR_PROMPT = Pinned(
    package="alpaca-eval",
    version="0.2.6",
    member="alpaca_eval/evaluators_configs/alpaca_eval_gpt4/alpaca_eval.txt",
    sha256="cf4bace43fa6ac71944b9ca2506587ad7c509478a219e98a3950abf9d5b42a98",
    license="Apache-2.0 (alpaca_eval)",
)
COMPLETION = {"temperature": 0, "max_tokens": 100}  # the annotator's completions_kwargs
SWITCH_SEED = ("is_switched_outputs", 123)  # alpaca_eval's switch column name and annotator seed
PLACEHOLDERS = ("instruction", "output_1", "output_2")


class JudgeError(UserError, RuntimeError):
    """The judge endpoint failed; the message names the URL."""


def to_messages(prompt: str) -> list[dict[str, str]]:
    """A ChatML-marked prompt ("<|im_start|>role\\n...<|im_end|>") as chat messages, content stripped."""
    messages = []
    for block in prompt.split("<|im_start|>")[1:]:
        role, _, rest = block.partition("\n")
        messages.append({"role": role.strip(), "content": rest.split("<|im_end|>", 1)[0].strip()})
    return messages


def render(template: str, instruction: str, output_1: str, output_2: str) -> str:
    """Fill each placeholder's first occurrence, in the order alpaca_eval fills them (not str.format: the template
    holds literal braces)."""
    values = {"instruction": instruction, "output_1": output_1, "output_2": output_2}
    for key in PLACEHOLDERS:
        template = template.replace("{" + key + "}", values[key], 1)
    return template


def is_switched(instruction: str) -> bool:
    """alpaca_eval's seeded choice of whether this item shows the model's answer first."""
    name, seed = SWITCH_SEED
    return random.Random(name + instruction + str(seed)).choices([False, True], k=1)[0]


def parse_preference(reply: str) -> int | None:
    """1 when "model_1" is ranked first, 2 when second, None when the reply is not such a ranking."""
    try:
        ranking = ast.literal_eval(reply.strip())
        rank = [entry for entry in ranking if entry["model"] == "model_1"][0]["rank"]
    except (ValueError, SyntaxError, TypeError, KeyError, IndexError, MemoryError, RecursionError):
        return None
    return rank if rank in (1, 2) else None


def ask(url: str, model: str, messages: list[dict[str, str]], api_key: str | None, timeout_s: float) -> str:
    """One chat completion with the annotator's settings; returns the reply text."""
    endpoint = url.rstrip("/") + "/chat/completions"
    hint = "check validate.judge_url and that it serves OpenAI chat completions."
    reply = post_json(
        endpoint, {"model": model, "messages": messages, **COMPLETION}, timeout_s, api_key, JudgeError, hint
    )
    try:
        return reply["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError) as err:
        raise JudgeError(f"judge endpoint {endpoint} replied without a chat completion ({err!r}); {hint}") from None


def win_scores(
    instructions: list[str],
    answers: list[str],
    references: list[str],
    url: str,
    model: str,
    api_key_env: str,
    timeout_s: float,
    advance=lambda n=1, **_: None,
) -> list[float | None]:
    """Per item: 1 when the judge prefers the model's answer over the reference, 0 when not, 0.5 for identical
    answers, None when the reply is not a ranking."""
    template = fetch(ANNOTATOR_PROMPT).read_text(encoding="utf-8")
    api_key = os.environ.get(api_key_env)
    scores = []
    for instruction, answer, reference in zip(instructions, answers, references):
        if answer == reference:
            scores.append(0.5)  # alpaca_eval's preference 0 for identical outputs
            advance(1)
            continue
        switched = is_switched(instruction)
        first, second = (answer, reference) if switched else (reference, answer)
        reply = ask(url, model, to_messages(render(template, instruction, first, second)), api_key, timeout_s)
        preference = parse_preference(reply)
        if preference is None:
            log.warning("judge reply is not a ranking of model_1 and model_2: %r", reply[:200])
            scores.append(None)
        else:
            scores.append(float((3 - preference if switched else preference) - 1))
        advance(1)
    return scores
