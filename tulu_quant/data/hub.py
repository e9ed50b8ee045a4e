"""Hub data sets through `datasets` (the optional `hub` extra), used when the Hugging Face Hub is reachable.

- wikitext2: Salesforce/wikitext, wikitext-2-raw-v1; ``calibration`` = train, ``evaluation`` = test. Documents are the
  data set's rows as they are (lines, some empty), so that joining them with blank lines (tulu_quant.eval.perplexity)
  is exactly the usual WikiText-2 perplexity protocol (``"\\n\\n".join(test["text"])``).
- c4: allenai/c4, the first English validation shard (en/c4-validation.00000-of-00008.json.gz, as GPTQ papers use);
  rows at even positions are ``calibration``, odd positions ``evaluation``.
- tulu-sft: allenai/tulu-v1-sft-mixture (Tulu's own finetuning mixture, chat), train split; even rows ``calibration``,
  odd rows ``evaluation``. With a limit the rows are streamed, so a calibration set does not download the whole set.
- tasks: openai/gsm8k (main: test + train), lukaemon/bbh (examples per task; the chain-of-thought prompts must be local,
  see tulu_quant.data.local), google-research-datasets/tydiqa (secondary_task = GoldP: validation + train).

Revisions are not pinned (the Hub cannot be reached from the project's machines to check them); ``describe()`` reports
the sha256 of what was loaded. Before the first download the Hub endpoint is probed with a short TCP connect, so an
unreachable Hub costs ~3 s instead of `datasets`' retries (~25 s); with HF_HUB_OFFLINE=1 only the local `datasets`
cache is used.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from itertools import islice
from typing import Any
from urllib.parse import urlparse

from .base import Conversation, DataUnavailable

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
WIKITEXT = ("Salesforce/wikitext", "wikitext-2-raw-v1")
C4 = ("allenai/c4", "en/c4-validation.00000-of-00008.json.gz")
TULU_SFT = "allenai/tulu-v1-sft-mixture"
GSM8K = ("openai/gsm8k", "main")
BBH = "lukaemon/bbh"
TYDIQA = ("google-research-datasets/tydiqa", "secondary_task")
LOCAL_HINT = "use an offline source (wiki, shakespeare, instructions) or a local file (file:PATH.txt / .jsonl) instead"


def _offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def hub_unreachable() -> str | None:
    """None when the Hub endpoint accepts a TCP connection (or offline mode is on), else the reason."""
    if _offline_mode():
        return None
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return _probe(endpoint.hostname or "", endpoint.port or (80 if endpoint.scheme == "http" else 443))


@functools.cache
def _probe(host: str, port: int) -> str | None:
    """Once per process and endpoint."""
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"{host}:{port} is not reachable ({err.strerror or err})"
    return None


def load_dataset(what: str, hint: str, *args, **kwargs):
    """datasets.load_dataset(*args, **kwargs), every way of failing turned into one DataUnavailable sentence. The
    loaders below only iterate over what it returns (rows as dicts), streamed or not."""
    if reason := hub_unreachable():
        raise DataUnavailable(f"{what} comes from the Hugging Face Hub, and {reason}; {hint}.")
    try:
        import datasets
        from datasets.exceptions import DatasetsError
    except ImportError:
        raise DataUnavailable(
            f"{what} needs the `datasets` package, which is not installed; pip install 'tulu-quant[hub]', or {hint}."
        ) from None
    try:
        return datasets.load_dataset(*args, **kwargs)
    except (OSError, DatasetsError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataUnavailable(f"{what} could not be loaded from the Hugging Face Hub ({first}); {hint}.") from None


# ------------------------------------------------------------------------------------------------------ sources


@functools.cache
def _wikitext(split: str) -> tuple[str, ...]:
    rows = load_dataset(
        "data source 'wikitext2'", LOCAL_HINT, *WIKITEXT, split="train" if split == "calibration" else "test"
    )
    return tuple(row["text"] for row in rows)


def wikitext_documents(split: str, limit: int | None = None) -> list[str]:
    return list(_wikitext(split))


def _parity(rows, split: str, limit: int | None) -> list:
    start = 0 if split == "calibration" else 1
    return list(islice(islice(rows, start, None, 2), limit))


@functools.cache
def _c4(split: str) -> tuple[str, ...]:
    rows = load_dataset("data source 'c4'", LOCAL_HINT, C4[0], data_files={"validation": C4[1]}, split="validation")
    return tuple(row["text"] for row in _parity(rows, split, None))


def c4_documents(split: str, limit: int | None = None) -> list[str]:
    return list(_c4(split))


def _messages(row: dict[str, Any]) -> Conversation:
    return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]


@functools.cache
def _tulu_sft(split: str, limit: int | None) -> tuple[Conversation, ...]:
    rows = load_dataset("data source 'tulu-sft'", LOCAL_HINT, TULU_SFT, split="train", streaming=limit is not None)
    return tuple(_messages(row) for row in _parity(rows, split, limit))


def tulu_sft_conversations(split: str, limit: int | None = None) -> list[Conversation]:
    return list(_tulu_sft(split, limit))


# ------------------------------------------------------------------------------------------------------ tasks


def task_hint(files: str) -> str:
    from .local import data_dir

    return f"put {files} in the TULU_QUANT_DATA directory ({data_dir()}; formats in tulu_quant/data/local.py)"


def gsm8k() -> dict:
    hint = task_hint("gsm8k.jsonl (rows with question and answer)")
    test = load_dataset("benchmark gsm8k", hint, *GSM8K, split="test")
    train = load_dataset("benchmark gsm8k", hint, *GSM8K, split="train")
    return {"test": [_gsm_row(r) for r in test], "train": [_gsm_row(r) for r in train]}


def _gsm_row(row: dict) -> dict:
    return {"question": row["question"], "answer": row["answer"]}


def bbh_examples(tasks: list[str]) -> dict[str, list[dict]]:
    hint = task_hint("bbh/*.json (BIG-Bench-Hard's task files)")
    return {
        name: [
            {"input": r["input"], "target": r["target"]}
            for r in load_dataset("benchmark bbh", hint, BBH, name, split="test")
        ]
        for name in tasks
    }


def _tydiqa_row(row: dict) -> dict:
    return {
        "lang": row["id"].split("-", 1)[0],
        "context": row["context"],
        "question": row["question"],
        "answers": list(row["answers"]["text"]),
    }


def tydiqa() -> dict:
    hint = task_hint("tydiqa.jsonl (rows with lang, context, question, answers)")
    test = load_dataset("benchmark tydiqa", hint, *TYDIQA, split="validation")
    train = load_dataset("benchmark tydiqa", hint, *TYDIQA, split="train")
    return {"test": [_tydiqa_row(r) for r in test], "train": [_tydiqa_row(r) for r in train]}
