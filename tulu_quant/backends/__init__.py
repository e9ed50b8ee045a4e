"""One interface to score and generate with any artifact: the fp16/fp32 model, the GPTQ checkpoint, an ONNX export, a
GGUF file.

Every backend tokenizes with the model directory's Hugging Face tokenizer (so token ids are identical across
backends) and exposes the same operations, which is all the validation metrics and the demo need:

- ``logits(ids)`` -> float32 array [len(ids), vocab]: next-token logits at every position of one sequence.
- ``logits_batch(seqs, last_only=False)``: the same for many sequences in one forward pass (padded and masked), a list
  of [len(seq), vocab] arrays, or with ``last_only`` one [len(seqs), vocab] array of each sequence's last position.
- ``generate(ids, settings, on_token, stop_ids)`` -> new token ids, calling ``on_token(id)`` as each is produced
  (streaming, for the demo and ``tulu-quant generate``).
- ``generate_batch(prompts, settings, on_tokens, stop_ids)``: many prompts at once (left-padded), each row ending on
  its own (a stop id, its ``on_tokens[i]`` returning True, its budget) exactly as ``generate`` would end it alone.

``load_backend(path)`` picks the implementation from the path (a ``.gguf`` file, or a folder with ``gguf.json``: GGUF
through llama.cpp) or the directory's contents (``genai_config.json``: ONNX; ``quantize_config.json`` or a
``quantization_config`` in config.json: GPTQ; otherwise plain transformers). An artifact is a folder, except a GGUF,
which is one file (``model_folder`` is where its tokenizer lives; ``artifact_paths`` lists an export folder's files).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from ..config import GenerationSettings
from ..errors import UserValueError

OnToken = Callable[[int], bool | None] | None  # called with each new token id as it is produced; True stops
StopIds = tuple[int, ...]  # token ids that end an answer (not returned)

IMPLEMENTATIONS = {
    "torch": "tulu_quant.backends.torch_backend:TorchBackend",
    "gptq": "tulu_quant.backends.torch_backend:TorchBackend",
    "onnx": "tulu_quant.backends.onnx_backend:OnnxBackend",
    "gguf": "tulu_quant.backends.gguf_backend:GgufBackend",
    "vllm": "tulu_quant.backends.vllm_backend:VllmBackend",  # explicit only: load_backend(path, "vllm", endpoint=URL)
}


class Backend(Protocol):
    kind: str  # "torch", "gptq", "onnx", "gguf" or "vllm"
    path: Path
    tokenizer: Any
    context_length: int
    on_gpu: bool  # computes on a GPU (decides eval.decode's automatic batch sizes)

    def logits(self, ids: list[int]) -> Any: ...

    def logits_batch(self, seqs: list[list[int]], last_only: bool = False) -> Any: ...

    def generate(
        self, ids: list[int], settings: GenerationSettings, on_token: OnToken = None, stop_ids: StopIds = ()
    ) -> list[int]: ...

    def generate_batch(
        self,
        prompts: list[list[int]],
        settings: GenerationSettings,
        on_tokens: list[OnToken] | None = None,
        stop_ids: StopIds = (),
    ) -> list[list[int]]: ...

    def size_bytes(self) -> int: ...

    def describe(self) -> dict[str, Any]: ...


class OneAtATime:
    """``logits`` and ``generate`` for one sequence, from a backend's batched operations (the backends inherit it)."""

    def logits(self, ids: list[int]):
        """float32 numpy array [len(ids), vocab]: the next-token logits at every position."""
        return self.logits_batch([ids])[0]

    def generate(
        self, ids: list[int], settings: GenerationSettings, on_token: OnToken = None, stop_ids: StopIds = ()
    ) -> list[int]:
        """New token ids after ``ids`` (a stop id that ended generation is not included). ``on_token(id)`` is called
        for each returned id as it is produced; returning True stops generation after that id."""
        return self.generate_batch([ids], settings, [on_token], stop_ids)[0]


def collect(tokens: Iterable[int], on_token: OnToken, stop_ids: StopIds) -> list[int]:
    """The new ids of one generation from its stream of tokens, by RowEnds' rules for one row without a budget: a stop
    id ends it (and is not returned); each returned id reaches on_token as it is produced, and on_token returning True
    ends it after that id. The stream is not advanced past the end (a backend may yield from a lazy decode loop)."""
    ends = RowEnds([sys.maxsize], [on_token], stop_ids)
    for token in tokens:
        if ends.add(0, token):
            break
    return ends.new[0]


def check_prompts(prompts: list[list[int]]) -> None:
    """The generation operations' bound: at least one prompt, none empty."""
    if not prompts or any(not ids for ids in prompts):
        raise ValueError("generate() needs a prompt of at least one token.")


def check_lengths(seqs: list[list[int]], context_length: int) -> None:
    """The scoring operations' bound: every sequence non-empty and within the model's context."""
    if not seqs or any(not ids for ids in seqs):
        raise ValueError("logits() needs at least one token id per sequence.")
    longest = max(map(len, seqs))
    if longest > context_length:
        raise ValueError(f"{longest} tokens exceed the model's context of {context_length}; score shorter windows.")


def pad_batch(seqs: list[list[int]], pad_id: int, left: bool) -> tuple[list[list[int]], list[list[int]]]:
    """(ids, attention mask) of sequences padded to the longest: on the left for generation and for each sequence's
    last position, on the right for every position's logits."""
    width = max(map(len, seqs))
    ids, mask = [], []
    for seq in seqs:
        pad = width - len(seq)
        ids.append([pad_id] * pad + list(seq) if left else list(seq) + [pad_id] * pad)
        mask.append([0] * pad + [1] * len(seq) if left else [1] * len(seq) + [0] * pad)
    return ids, mask


class RowEnds:
    """Each row's end in a batched generation, by ``collect``'s rules applied row by row: ``add(row, token)`` for each
    new token of an unfinished row; a stop id ends the row (and is not kept), otherwise the token is kept and passed to
    the row's on_token, which ends the row by returning True; a row also ends at its own budget and after one of
    ``end_ids``, the model's own EOS, which engines end a sequence at (kept when it is not a stop id; what an engine
    appends after it, padding, never reaches the row)."""

    def __init__(self, budgets: list[int], on_tokens: list[OnToken] | None, stop_ids: StopIds, end_ids: StopIds = ()):
        self.budgets = budgets
        self.on_tokens = on_tokens or [None] * len(budgets)
        self.stop_ids, self.end_ids = set(stop_ids), set(end_ids)
        self.new: list[list[int]] = [[] for _ in budgets]
        self.done = [budget <= 0 for budget in budgets]

    def add(self, row: int, token: int) -> bool:
        """Take the row's next token; True once the row has ended."""
        if self.done[row]:
            return True
        if token in self.stop_ids:
            self.done[row] = True
            return True
        self.new[row].append(token)
        on_token = self.on_tokens[row]
        ended = token in self.end_ids or len(self.new[row]) >= self.budgets[row]
        if (on_token is not None and on_token(token)) or ended:
            self.done[row] = True
        return self.done[row]


def detect_kind(path: Path) -> str:
    path = Path(path)
    if (path.suffix == ".gguf" and path.is_file()) or (path / "gguf.json").is_file():
        return "gguf"
    if (path / "genai_config.json").is_file():
        return "onnx"
    if (path / "quantize_config.json").is_file():
        return "gptq"
    config = path / "config.json"
    if config.is_file() and "quantization_config" in json.loads(config.read_text()):
        return "gptq"
    if config.is_file():
        return "torch"
    raise UserValueError(
        f"{path}: not a model directory (no config.json or genai_config.json) nor a .gguf file; pass a model."
    )


def context_of(path: Path, kind: str | None = None) -> int | None:
    """The longest sequence an artifact's backend scores, read from its files without loading the model (None: its
    files do not say): max_position_embeddings for torch/GPTQ folders (and vLLM, which serves them), genai_config's
    context_length for ONNX, the trained context capped at the backend's MAX_CONTEXT for GGUF."""
    kind = kind or detect_kind(path)
    if kind == "gguf":
        from .gguf_backend import context_limit, read_metadata, resolve_file

        return context_limit(read_metadata(resolve_file(path)))
    if kind == "onnx":
        return int(json.loads((Path(path) / "genai_config.json").read_text())["model"]["context_length"])
    length = json.loads((Path(path) / "config.json").read_text()).get("max_position_embeddings")
    return int(length) if length else None


def model_folder(path: Path) -> Path:
    """The folder holding an artifact's tokenizer files: the artifact itself, or a GGUF file's folder."""
    path = Path(path)
    return path.parent if path.is_file() else path


def artifact_paths(path: Path) -> list[Path]:
    """The artifacts a stage's output folder holds: a GGUF export folder holds one per file (its types in order),
    every other output folder is one artifact."""
    path = Path(path)
    if (path / "gguf.json").is_file():
        from .gguf_backend import gguf_files

        return gguf_files(path)
    return [path]


def load_backend(path: Path, kind: str | None = None, **options: Any) -> Backend:
    kind = kind or detect_kind(path)
    module, cls = IMPLEMENTATIONS[kind].split(":")
    return getattr(importlib.import_module(module), cls)(Path(path), kind=kind, **options)
