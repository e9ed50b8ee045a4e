"""The Source record every data source is described by, and the errors of the data package."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import UserError, UserValueError

Kind = Literal["text", "chat"]
Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
Conversation = list[Message]


class SourceError(UserValueError):
    """A data source name, split or local file the user must fix (one sentence naming it and what to do)."""


class DataUnavailable(UserError, RuntimeError):
    """The data exists but cannot be reached from here (no `datasets`, no Hub access, no local copy)."""


@dataclass(frozen=True)
class Source:
    """A named source of plain-text documents (kind "text") or chat conversations (kind "chat").

    ``load(split, limit)`` returns the split's records (at least the first `limit` when not None; callers treat them
    as read-only); ``materials(split)`` names the
    underlying material a split is made of, which is what ``check_disjoint`` compares; ``info()`` adds provenance
    (package pin, sha256, Hub id, the split rule) to ``describe()``. Remote sources (the Hub) only report sizes for the
    splits asked for explicitly, since measuring them means downloading them.
    """

    name: str
    kind: Kind
    splits: tuple[str, ...]
    license: str
    origin: str
    load: Callable[[str, int | None], Sequence] = field(repr=False, compare=False)
    materials: Callable[[str], frozenset[str]] = field(repr=False, compare=False)
    info: Callable[[], dict[str, Any]] = field(default=dict, repr=False, compare=False)
    remote: bool = False

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise SourceError(f"data source '{self.name}' has no split '{split}'; choose one of {list(self.splits)}.")

    def _records(self, split: str, kind: Kind, limit: int | None) -> list:
        self.check_split(split)
        if self.kind != kind:
            other = "conversations" if self.kind == "chat" else "documents"
            raise SourceError(
                f"data source '{self.name}' is a {self.kind} source; call {other}() instead "
                f"(chat sources are rendered with the chat format by the caller)."
            )
        records = self.load(split, limit)
        return list(records[:limit] if limit is not None else records)

    def documents(self, split: str, limit: int | None = None) -> list[str]:
        """The split's plain-text documents, in a fixed order (the first `limit` of them when given)."""
        return self._records(split, "text", limit)

    def conversations(self, split: str, limit: int | None = None) -> list[Conversation]:
        """The split's conversations ([{"role", "content"}, ...]), in a fixed order (the first `limit` when given)."""
        return self._records(split, "chat", limit)

    def describe(self, splits: Iterable[str] | None = None) -> dict[str, Any]:
        """Provenance and sizes for reports: name, kind, license, origin, pins, and per split the number of records,
        characters and the sha256 of the records (JSON, sorted keys)."""
        wanted = list(splits) if splits is not None else ([] if self.remote else list(self.splits))
        sizes = {}
        for split in wanted:
            records = self._records(split, self.kind, None)
            sizes[split] = {
                ("documents" if self.kind == "text" else "conversations"): len(records),
                "characters": characters(records),
                "sha256": content_hash(records),
            }
        return {
            "name": self.name,
            "kind": self.kind,
            "license": self.license,
            "origin": self.origin,
            "splits": list(self.splits),
            **self.info(),
            "sizes": sizes,
        }


def characters(records: list) -> int:
    """Characters of documents, or of the message contents of conversations."""
    return sum(len(r) if isinstance(r, str) else sum(len(m["content"]) for m in r) for r in records)


def content_hash(records: Any) -> str:
    return hashlib.sha256(json.dumps(records, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
