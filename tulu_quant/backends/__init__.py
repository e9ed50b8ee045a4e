"""One interface to score and generate with any artifact: the fp16/fp32 model, the GPTQ checkpoint, an ONNX export.

Every backend tokenizes with the model directory's Hugging Face tokenizer (so token ids are identical across
backends) and exposes the same two operations, which is all the validation metrics and the demo need:

- ``logits(ids)`` -> float32 array [len(ids), vocab]: next-token logits at every position of one sequence.
- ``generate(ids, settings, on_token)`` -> new token ids, calling ``on_token(id)`` as each is produced (streaming).

``load_backend(path)`` picks the implementation from the directory's contents (``genai_config.json``: ONNX;
``quantize_config.json`` or a ``quantization_config`` in config.json: GPTQ; otherwise plain transformers).
"""

from __future__ import annotations

import importlib
import json
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
}


class Backend(Protocol):
    kind: str  # "torch", "gptq" or "onnx"
    path: Path
    tokenizer: Any
    context_length: int

    def logits(self, ids: list[int]) -> Any: ...

    def generate(
        self, ids: list[int], settings: GenerationSettings, on_token: OnToken = None, stop_ids: StopIds = ()
    ) -> list[int]: ...

    def size_bytes(self) -> int: ...

    def describe(self) -> dict[str, Any]: ...


def collect(tokens: Iterable[int], on_token: OnToken, stop_ids: StopIds) -> list[int]:
    """The new ids of a generation from its stream of tokens, with every backend's contract: a stop id ends it (and is
    not returned); each returned id reaches on_token as it is produced, and on_token returning True ends it after that
    id. The stream is not advanced past the end (a backend yields from a lazy decode loop)."""
    new: list[int] = []
    for token in tokens:
        if token in stop_ids:
            break
        new.append(token)
        if on_token is not None and on_token(token):
            break
    return new


def detect_kind(path: Path) -> str:
    path = Path(path)
    if (path / "genai_config.json").is_file():
        return "onnx"
    if (path / "quantize_config.json").is_file():
        return "gptq"
    config = path / "config.json"
    if config.is_file() and "quantization_config" in json.loads(config.read_text()):
        return "gptq"
    if config.is_file():
        return "torch"
    raise UserValueError(f"{path}: not a model directory (no config.json or genai_config.json); pass a model folder.")


def load_backend(path: Path, kind: str | None = None, **options: Any) -> Backend:
    kind = kind or detect_kind(path)
    module, cls = IMPLEMENTATIONS[kind].split(":")
    return getattr(importlib.import_module(module), cls)(Path(path), kind=kind, **options)
