"""Local files: `file:PATH` sources, and the benchmark files of the ``TULU_QUANT_DATA`` directory.

``file:PATH`` (relative paths from the working directory):

- ``.txt``: one plain-text document, the whole file (UTF-8);
- ``.jsonl``: one JSON object per line, either all ``{"text": str}`` (a text source, one document per line) or all
  ``{"messages": [{"role": "user"|"assistant"|"system", "content": str}, ...]}`` (a chat source).
  Other keys are ignored.

A file is one piece of material: it answers to the splits ``all``, ``calibration`` and ``evaluation`` with its whole
content, and ``check_disjoint`` refuses the same file on both sides.

``TULU_QUANT_DATA`` (default: ``<cache>/data``, the cache being ``TULU_QUANT_CACHE`` or ``~/.cache/tulu-quant``) holds
benchmark data sets the Hub would otherwise provide; each is used when present:

- ``gsm8k.jsonl``: GSM8K test rows ``{"question", "answer"}`` (answer: the worked solution ending in ``#### N``);
  optional ``gsm8k_train.jsonl`` (same format) for the few-shot exemplars;
- ``bbh/``: BIG-Bench-Hard's task files ``bbh/*.json`` (or ``bbh/bbh/*.json``) ``{"examples": [{"input",
  "target"}]}`` and its chain-of-thought prompts ``bbh/cot-prompts/<task>.txt`` (the repository's files as they are:
  the first two lines, a canary and a rule, are skipped, as open-instruct does);
- ``tydiqa.jsonl``: TyDiQA-GoldP dev rows ``{"lang", "context", "question", "answers": [str, ...]}``; optional
  ``tydiqa_train.jsonl`` (same format) for the one-shot examples.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import MissingPath
from ..fetch import cache_dir
from .base import Conversation, Kind, SourceError

FILE_SPLITS = ("all", "calibration", "evaluation")
ROLES = ("system", "user", "assistant")


def data_dir() -> Path:
    return Path(os.environ.get("TULU_QUANT_DATA") or cache_dir() / "data").expanduser()


def resolve(name: str) -> Path:
    """file:PATH -> the absolute path; a missing file is a FileNotFoundError naming it."""
    path = Path(name.removeprefix("file:")).expanduser().resolve()
    if not path.is_file():
        raise MissingPath(
            f"data source {name}: {path} does not exist; give the path of an existing .txt or .jsonl file."
        )
    if path.suffix not in (".txt", ".jsonl"):
        raise SourceError(
            f"data source {name}: unsupported file type '{path.suffix}'; use .txt (one document) or "
            ".jsonl (rows with 'text' or 'messages')."
        )
    return path


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a bad line is a SourceError naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise SourceError(f"{path}:{number}: not valid JSON ({err.msg}); fix the line.") from None
            if not isinstance(row, dict) or (missing := [k for k in required if k not in row]):
                what = f"has no {missing}" if isinstance(row, dict) else "is not a JSON object"
                raise SourceError(f"{path}:{number}: the row {what}; every row needs {list(required)}.")
            rows.append(row)
    return rows


def file_kind(path: Path) -> Kind:
    if path.suffix == ".txt":
        return "text"
    with open(path, encoding="utf-8") as lines:
        first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise SourceError(f"{path}: the file is empty; give it rows with 'text' or 'messages'.")
    try:
        row = json.loads(first)
    except json.JSONDecodeError as err:
        raise SourceError(f"{path}:1: not valid JSON ({err.msg}); fix the line.") from None
    if isinstance(row, dict) and "messages" in row:
        return "chat"
    if isinstance(row, dict) and "text" in row:
        return "text"
    raise SourceError(f"{path}: the first row has neither 'text' nor 'messages'; use one of them in every row.")


def _conversation(path: Path, number: int, messages: Any) -> Conversation:
    ok = (
        isinstance(messages, list)
        and messages
        and all(isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages)
    )
    if not ok:
        raise SourceError(
            f"{path}: row {number}: 'messages' must be a non-empty list of {{'role': one of {list(ROLES)}, "
            "'content': str}."
        )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def file_records(path: Path, kind: Kind) -> list:
    if path.suffix == ".txt":
        return [path.read_text(encoding="utf-8")]
    key = "messages" if kind == "chat" else "text"
    rows = read_jsonl(path, (key,))
    if kind == "chat":
        return [_conversation(path, i, row["messages"]) for i, row in enumerate(rows, 1)]
    bad = next((i for i, row in enumerate(rows, 1) if not isinstance(row["text"], str)), None)
    if bad:
        raise SourceError(f"{path}: row {bad}: 'text' must be a string.")
    return [row["text"] for row in rows]


# ------------------------------------------------------------------------------------------------------ benchmark files


def local_gsm8k(root: Path) -> dict | None:
    test = root / "gsm8k.jsonl"
    if not test.is_file():
        return None
    task = {"test": read_jsonl(test, ("question", "answer"))}
    if (train := root / "gsm8k_train.jsonl").is_file():
        task["train"] = read_jsonl(train, ("question", "answer"))
    return task


def cot_prompt(path: Path) -> str:
    return "".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[2:])


def local_bbh_prompts(root: Path) -> dict[str, str] | None:
    folder = root / "bbh" / "cot-prompts"
    if not folder.is_dir():
        return None
    return {p.stem: cot_prompt(p) for p in sorted(folder.glob("*.txt"))}


def local_bbh_examples(root: Path) -> dict[str, list[dict]] | None:
    for folder in (root / "bbh" / "bbh", root / "bbh"):
        files = sorted(folder.glob("*.json"))
        if files:
            tasks = {}
            for path in files:
                try:
                    examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise SourceError(
                        f"{path}: expected a JSON object with 'examples': [{{'input', 'target'}}, ...]; "
                        "use BIG-Bench-Hard's task files as they are."
                    ) from None
                tasks[path.stem] = [{"input": e["input"], "target": e["target"]} for e in examples]
            return tasks
    return None


def bbh_task(examples: dict[str, list[dict]], prompts: dict[str, str], where: str) -> dict:
    missing = sorted(set(examples) - set(prompts))
    if missing:
        raise SourceError(
            f"{where}: no chain-of-thought prompt for the BBH tasks {missing}; add "
            "bbh/cot-prompts/<task>.txt for each of them."
        )
    return {name: {"examples": examples[name], "cot_prompt": prompts[name]} for name in sorted(examples)}


def local_tydiqa(root: Path) -> dict | None:
    test = root / "tydiqa.jsonl"
    if not test.is_file():
        return None
    keys = ("lang", "context", "question", "answers")
    task = {"test": read_jsonl(test, keys)}
    if (train := root / "tydiqa_train.jsonl").is_file():
        task["train"] = read_jsonl(train, keys)
    return task
