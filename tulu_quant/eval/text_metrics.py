"""Answer extraction and text scoring, as open-instruct computes them (reimplemented; plain strings in, floats out).

- exact match: Hugging Face ``evaluate``'s exact_match with ignore_case and ignore_punctuation (lower-case, delete
  ASCII punctuation, compare).
- GSM8K: the last number in the output (thousands commas removed) against the answer after ``####``.
- BBH: the output's first paragraph, and within it the text between "So the answer is" and the next period.
- TydiQA: SQuAD v1.1's F1 and exact match (lower-case, no punctuation, no articles a/an/the; F1 from the token
  overlap, 0 when nothing is shared, an empty prediction included), the best over the gold answers.
- AlpacaFarm agreement: exact match after whitespace normalization, and ROUGE-L F1 (longest common subsequence of
  lower-cased word tokens; beta = 1).
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCT = str.maketrans("", "", string.punctuation)
_NUMBER = re.compile(r"[-+]?\d*\.\d+|\d+")
_THOUSANDS = re.compile(r"(\d),(\d)")


def exact_match(prediction: str, target: str) -> float:
    return float(prediction.lower().translate(_PUNCT) == target.lower().translate(_PUNCT))


# ------------------------------------------------------------------------------------------------------ GSM8K


def gsm_target(answer: str) -> str:
    """'...#### 1,234' (or a bare number) -> '1234'."""
    final = answer.split("####")[-1].strip()
    return _THOUSANDS.sub(r"\1\2", final)


def last_number(output: str) -> str:
    """The last number of a generation (open-instruct's GSM prediction); the whole text when there is none."""
    text = _THOUSANDS.sub(r"\1\2", output)
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else text


# ------------------------------------------------------------------------------------------------------ BBH


def bbh_answer(output: str) -> str:
    """open-instruct's BBH prediction: the first paragraph of the output, then the answer named in it."""
    paragraph = output.strip().split("\n\n")[0].strip()
    found = re.search(r"So the answer is (.*?)\.", paragraph)
    return found.group(1).strip() if found else paragraph


def bbh_direct_prompt(cot_prompt: str) -> str:
    """Turn a chain-of-thought few-shot prompt into the direct-answer one: each 'Q: ...\\nA: <reasoning> So the answer
    is X.' demonstration becomes 'Q: ...\\nA: X.' (open-instruct --no_cot)."""
    fields = []
    for field in cot_prompt.split("\n\n"):
        if field.startswith("Q:") and "So the answer is" in field and "\nA:" in field:
            answer = field.split("So the answer is")[-1].strip()
            field = field.split("\nA:")[0].strip() + "\nA: " + answer
        fields.append(field)
    return "\n\n".join(fields)


# ------------------------------------------------------------------------------------------------------ SQuAD F1


def squad_normalize(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_f1(prediction: str, answers: list[str]) -> float:
    """SQuAD v1.1's token-overlap F1 (0..1), the best over the gold answers: 0 when no token is shared, so an empty
    prediction scores 0 even against an empty gold answer."""
    best = 0.0
    pred_tokens = squad_normalize(prediction).split()
    for answer in answers:
        gold_tokens = squad_normalize(answer).split()
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common:
            precision, recall = common / len(pred_tokens), common / len(gold_tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def squad_exact(prediction: str, answers: list[str]) -> float:
    """SQuAD v1.1's exact match (0 or 1): the normalized prediction equals a normalized gold answer."""
    return float(any(squad_normalize(prediction) == squad_normalize(answer) for answer in answers))


# ------------------------------------------------------------------------------------------------------ agreement


def normalized(text: str) -> str:
    return " ".join(text.split())


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens (0..1)."""
    cand, ref = candidate.lower().split(), reference.lower().split()
    if not cand or not ref:
        return float(cand == ref)
    lcs = _lcs_length(cand, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]
