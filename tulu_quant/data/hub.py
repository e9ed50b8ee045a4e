"""Hub data sets through `datasets` (the optional `hub` extra), used when the Hugging Face Hub is reachable.

- wikitext2: Salesforce/wikitext, wikitext-2-raw-v1; ``calibration`` = train, ``evaluation`` = test. Documents are the
  data set's rows as they are (lines, some empty), so that joining them with blank lines (tulu_quant.eval.perplexity)
  is exactly the usual WikiText-2 perplexity protocol (``"\\n\\n".join(test["text"])``).
- c4: allenai/c4, the first English validation shard (en/c4-validation.00000-of-00008.json.gz, as GPTQ papers use);
  rows at even positions are ``calibration``, odd positions ``evaluation``.
- tulu-sft: allenai/tulu-v1-sft-mixture (Tulu's own finetuning mixture, chat), train split; even rows ``calibration``,
  odd rows ``evaluation``. With a limit the rows are streamed, so a calibration set does not download the whole set.
- benchmark data sets (tulu_quant.data.tasks tries local files and pinned wheels first): openai/gsm8k (main, test),
  lukaemon/bbh (examples per task; the chain-of-thought prompts must be local), google-research-datasets/tydiqa
  (secondary_task = GoldP: validation + train), cais/mmlu (all, dev), tatsu-lab/alpaca_eval (alpaca_eval, eval).

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
MMLU = ("cais/mmlu", "all")
ALPACA_EVAL = ("tatsu-lab/alpaca_eval", "alpaca_eval")
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


def gsm8k_test(hint: str) -> list[dict]:
    rows = load_dataset("GSM8K's test split", hint, *GSM8K, split="test")
    return [{"question": r["question"], "answer": r["answer"]} for r in rows]


def bbh_examples(tasks: list[str], hint: str) -> dict[str, list[dict]]:
    return {
        name: [
            {"input": r["input"], "target": r["target"]}
            for r in load_dataset("BIG-Bench-Hard's task files", hint, BBH, name, split="test")
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


def tydiqa(hint: str) -> dict:
    test = load_dataset("TyDiQA-GoldP", hint, *TYDIQA, split="validation")
    train = load_dataset("TyDiQA-GoldP", hint, *TYDIQA, split="train")
    return {"test": [_tydiqa_row(r) for r in test], "train": [_tydiqa_row(r) for r in train]}


def mmlu_dev(hint: str) -> list[dict]:
    """MMLU's dev split: {question, choices, answer "A".."D", subject}."""
    rows = load_dataset("MMLU's dev split", hint, *MMLU, split="dev")
    letters = "ABCD"
    return [
        {
            "question": r["question"],
            "choices": list(r["choices"]),
            "answer": letters[r["answer"]],
            "subject": r["subject"],
        }
        for r in rows
    ]


def alpaca_eval(hint: str) -> list[dict]:
    """AlpacaEval's evaluation set: {instruction, output (text-davinci-003's)}."""
    rows = load_dataset("AlpacaEval's evaluation set", hint, *ALPACA_EVAL, split="eval")
    return [{"instruction": r["instruction"], "output": r["output"]} for r in rows]
