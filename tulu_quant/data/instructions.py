"""`instructions`: a chat source built offline, for calibrating in the chat format when the Hub (tulu-sft) is out
of reach.

It is NOT human-written instruction data. Each conversation is one user turn made from a fixed template and one
assistant turn that is reference text taken verbatim from the offline material:

- wiki paragraphs: user "Write a paragraph for an encyclopedia article about {title} (section: {heading})." ->
  assistant: that paragraph (paragraphs of at least MIN_PARAGRAPH characters);
- Shakespeare: user "Continue this passage from Shakespeare's {play}:" + the first speeches of a passage of consecutive
  speeches (about PASSAGE characters, cut at speech boundaries) -> assistant: the speeches that follow;
- MMLU: user: the question, its four choices and "Answer with the letter of the correct choice." -> assistant:
  "The answer is {letter}. {choice}";
- HumanEval (evaluation split only): user "Complete this Python function:" + the prompt -> assistant: the prompt with
  the canonical solution, as a code block.

Splits follow the underlying material, so they are disjoint: ``calibration`` uses the wiki calibration articles, the
Shakespeare calibration plays and MMLU's few-shot pool (each subject's first 5 questions, never scored by validation,
less 7 that MMLU repeats among its scored questions);
``evaluation`` uses the wiki and Shakespeare evaluation halves, the scored MMLU questions and all of HumanEval (164
problems, every one of them scored by Codex-Eval, so none may be calibrated on). The kinds are interleaved round-robin
(wiki, play, MMLU, code, wiki, ...) so any prefix is a mix.
"""

from __future__ import annotations

import functools
from itertools import chain, zip_longest

from . import offline
from .base import Conversation

MIN_PARAGRAPH = 300  # characters: shorter paragraphs are mostly lists and captions
PASSAGE = 1500  # characters of consecutive speeches per Shakespeare conversation
MIN_CONTINUATION = 200  # characters: a passage whose continuation is shorter (a lone stage direction) is skipped


def _chat(user: str, assistant: str) -> Conversation:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def wiki_conversations(articles: list[tuple[str, tuple[tuple[int, str], ...]]]) -> list[Conversation]:
    conversations = []
    for title, blocks in articles:
        headings: dict[int, str] = {}
        for level, text in blocks:
            if level:
                headings = {k: v for k, v in headings.items() if k < level} | {level: text}
                continue
            if len(text) < MIN_PARAGRAPH or "\n" in text:
                continue
            section = " > ".join(headings[k] for k in sorted(headings))
            where = f" (section: {section})" if section else ""
            conversations.append(_chat(f"Write a paragraph for an encyclopedia article about {title}{where}.", text))
    return conversations


def play_title(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def play_conversations(plays: list[tuple[str, str]]) -> list[Conversation]:
    """Passages of consecutive speeches within a scene; the first speeches (up to half the passage) are the prompt."""
    conversations = []
    for _, text in plays:
        title = play_title(text)
        for scene in _scenes(text):
            for passage in _passages(scene.split("\n\n")):
                cut, length = 1, len(passage[0])
                while cut < len(passage) - 1 and length + len(passage[cut]) < PASSAGE // 2:
                    length += len(passage[cut])
                    cut += 1
                answer = "\n\n".join(passage[cut:])
                if len(answer) >= MIN_CONTINUATION:
                    conversations.append(
                        _chat(
                            f"Continue this passage from Shakespeare's {title}:\n\n" + "\n\n".join(passage[:cut]),
                            answer,
                        )
                    )
    return conversations


def _scenes(text: str) -> list[str]:
    scenes, current = [], []
    for block in text.split("\n\n"):
        if block.upper().startswith(("SCENE", "ACT ", "PROLOGUE", "EPILOGUE", "INDUCTION")):
            if current:
                scenes.append("\n\n".join(current))
            current = []
        else:
            current.append(block)
    if current:
        scenes.append("\n\n".join(current))
    return scenes


def _passages(blocks: list[str]) -> list[list[str]]:
    passages, current, length = [], [], 0
    for block in blocks:
        current.append(block)
        length += len(block)
        if length >= PASSAGE:
            passages.append(current)
            current, length = [], 0
    if len(current) >= 2:
        passages.append(current)
    return [p for p in passages if len(p) >= 2]


def mmlu_conversation(record: dict) -> Conversation:
    choices = "\n".join(f"{letter}. {choice}" for letter, choice in zip(offline.MMLU_LETTERS, record["choices"]))
    answer = record["choices"][offline.MMLU_LETTERS.index(record["answer"])]
    user = f"{record['question']}\n{choices}\nAnswer with the letter of the correct choice."
    return _chat(user, f"The answer is {record['answer']}. {answer}")


def code_conversation(problem: dict) -> Conversation:
    solution = problem["prompt"] + problem["canonical_solution"]
    return _chat(
        f"Complete this Python function:\n\n```python\n{problem['prompt']}```", f"```python\n{solution.rstrip()}\n```"
    )


def interleave(*groups: list[Conversation]) -> list[Conversation]:
    """Round-robin over the groups (a, b, c, a, b, c, ...), the longer groups finishing alone."""
    missing = object()
    return [c for c in chain.from_iterable(zip_longest(*groups, fillvalue=missing)) if c is not missing]


@functools.cache
def _build(split: str) -> tuple[Conversation, ...]:
    groups = [
        wiki_conversations(offline.wiki_split(split)),
        play_conversations(offline.plays_split(split)),
        [mmlu_conversation(r) for r in offline.mmlu_split(split)],
    ]
    if split == "evaluation":
        groups.append([code_conversation(p) for p in offline.load_humaneval()])
    return tuple(interleave(*groups))


def conversations(split: str, limit: int | None = None) -> list[Conversation]:
    return list(_build(split))


# The material each split is made of (tulu_quant.data.registry.check_disjoint compares these).
MATERIALS = {
    "calibration": frozenset({"enwiki-dump:calibration", "shakespeare:calibration", "mmlu:calibration"}),
    "evaluation": frozenset({"enwiki-dump:evaluation", "shakespeare:evaluation", "mmlu:evaluation", "humaneval"}),
}
