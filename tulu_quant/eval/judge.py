"""Pairwise judging through an OpenAI-compatible chat-completions endpoint (AlpacaFarm-style win rate).

For each instruction the judge sees the two answers as "Output (a)" and "Output (b)", their order drawn per item by the
suite seed (so a judge's position bias cancels out on average), and answers with the letter of the better one. The
candidate's score per item is 1 (win), 0.5 (tie or unreadable verdict) or 0 (loss); the win rate is their mean.
Plain HTTP through urllib; the API key, when the configured environment variable holds one, is a Bearer token.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import urllib.error
import urllib.request

from ..errors import UserError

log = logging.getLogger(__name__)

JUDGE_SYSTEM = "You are a careful evaluator of answers written by AI assistants."
JUDGE_TEMPLATE = """\
Which output answers the instruction better? Judge helpfulness, correctness and clarity; ignore length
for its own sake. Reply with exactly "Output (a)" or "Output (b)".

# Instruction
{instruction}

# Output (a)
{a}

# Output (b)
{b}

# Which is better, Output (a) or Output (b)?"""


class JudgeError(UserError, RuntimeError):
    """The judge endpoint failed; the message names the URL."""


def parse_verdict(text: str) -> str | None:
    """'a', 'b' or None when the reply names neither (or both)."""
    found = set(re.findall(r"output\s*\(?\s*([ab])\s*\)?", text.lower()))
    return found.pop() if len(found) == 1 else None


def ask(url: str, model: str, prompt: str, api_key: str | None, timeout_s: float) -> str:
    """One chat completion at temperature 0; returns the reply text."""
    body = json.dumps(
        {
            "model": model,
            "temperature": 0,
            "max_tokens": 16,
            "messages": [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}],
        }
    )
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    endpoint = url.rstrip("/") + "/chat/completions"
    request = urllib.request.Request(endpoint, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            reply = json.loads(response.read())
        return reply["choices"][0]["message"]["content"] or ""
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError, KeyError, IndexError) as err:
        raise JudgeError(
            f"judge endpoint {endpoint} failed ({err}); check validate.judge_url and that it serves "
            "OpenAI chat completions."
        ) from None


def win_scores(
    instructions: list[str],
    candidate: list[str],
    reference: list[str],
    url: str,
    model: str,
    api_key_env: str,
    timeout_s: float,
    seed: int,
    advance=lambda n=1, **_: None,
) -> list[float]:
    """Per-item candidate score against the reference: 1 win, 0.5 tie/unclear, 0 loss."""
    rng = random.Random(seed)
    api_key = os.environ.get(api_key_env)
    scores = []
    for instruction, cand, ref in zip(instructions, candidate, reference):
        candidate_first = rng.random() < 0.5  # drawn for every item, so the order of later items never shifts
        if " ".join(cand.split()) == " ".join(ref.split()):
            scores.append(0.5)  # identical answers tie without asking
            advance(1)
            continue
        a, b = (cand, ref) if candidate_first else (ref, cand)
        verdict = parse_verdict(
            ask(url, model, JUDGE_TEMPLATE.format(instruction=instruction, a=a, b=b), api_key, timeout_s)
        )
        if verdict is None:
            scores.append(0.5)
        else:
            scores.append(1.0 if (verdict == "a") == candidate_first else 0.0)
        advance(1)
    return scores
