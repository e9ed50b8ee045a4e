"""Local files: `file:PATH` sources, and the benchmark files of the ``TULU_QUANT_DATA`` directory.

``file:PATH`` (relative paths from the working directory):

- ``.txt``: one plain-text document, the whole file (UTF-8);
- ``.jsonl``: one JSON object per line, either all ``{"text": str}`` (a text source, one document per line) or all
  ``{"messages": [{"role": "user"|"assistant"|"system", "content": str}, ...]}`` (a chat source).
  Other keys are ignored.

A file is one piece of material: it answers to the splits ``all``, ``calibration`` and ``evaluation`` with its whole
content, and ``check_disjoint`` refuses the same file on both sides.

``TULU_QUANT_DATA`` (default: ``<cache>/data``, the cache being ``TULU_QUANT_CACHE`` or ``~/.cache/tulu-quant``) is the
default folder of benchmark data sets (tulu_quant.data.tasks lists what it may hold).
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
