"""The transformers backend: a plain model directory (fp16/bf16/fp32 weights) or a GPTQ checkpoint.

Plain weights are computed in float32 on CPU (fp16 matmuls on CPU are slow and less exact) and in their stored dtype on
CUDA. A GPTQ checkpoint loads through ``AutoModelForCausalLM.from_pretrained``, which needs optimum and GPTQModel
(its kernels run on CPU and CUDA). Generation is our own loop over the KV cache, so that every token reaches
``on_token`` as soon as it exists and the caller can stop it (return True).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import GenerationSettings
from ..errors import MissingLibrary, UserValueError
from . import OnToken, StopIds, collect

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


# ------------------------------------------------------------------------------------------------------ pure helpers


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserValueError(f"device '{device}' was asked for but CUDA is not available here; use device cpu.")
    return device


def default_dtype(device: str, stored: str | None) -> str:
    """float32 on CPU, on every CPU: the fp16 reference is defined as its weights computed in float32 (exact), and
    half precision on a CPU without native BF16/FP16 is tens of times slower (tulu_quant.hardware). On CUDA the
    checkpoint's own half dtype (float16 unless it says bfloat16)."""
    if device == "cpu":
        return "float32"
    return "bfloat16" if stored == "bfloat16" else "float16"


def next_token(logits, history: list[int], settings: GenerationSettings, generator) -> int:
    """Pick the next token from one position's logits [vocab].

    repetition penalty (CTRL, as transformers): a seen token's logit is divided by the penalty when positive and
    multiplied when negative; temperature 0 is greedy; otherwise softmax(logits / T), restricted to the smallest set of
    tokens whose probability reaches top_p (the most likely token always stays), sampled with ``generator``.
    """
    import torch

    logits = logits.float().clone()
    if settings.repetition_penalty != 1.0 and history:
        seen = torch.tensor(sorted(set(history)), dtype=torch.long)
        values = logits[seen]
        logits[seen] = torch.where(
            values > 0, values / settings.repetition_penalty, values * settings.repetition_penalty
        )
    if settings.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the tokens ranked above each one
        sorted_probs[before >= settings.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


def weights_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


# ------------------------------------------------------------------------------------------------------ the backend


class TorchBackend:
    """Score and generate with transformers. ``kind`` is "torch" (plain weights) or "gptq"."""

    def __init__(self, path: Path, kind: str = "torch", device: str = "cpu", dtype: str | None = None):
        import torch

        if kind not in ("torch", "gptq"):
            raise ValueError(f"TorchBackend handles kind 'torch' or 'gptq', not '{kind}'.")
        self.path, self.kind = Path(path), kind
        self.device = resolve_device(device)
        self.tokenizer = _load_tokenizer(self.path)
        self.model = _load_model(self.path, kind, self.device, dtype)
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self._torch = torch
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    # ---------------------------------------------------------------------------------------------- scoring

    def logits(self, ids: list[int]):
        """float32 numpy array [len(ids), vocab]: the next-token logits at every position."""
        torch = self._torch
        if not ids:
            raise ValueError("logits() needs at least one token id.")
        if len(ids) > self.context_length:
            raise ValueError(
                f"{len(ids)} tokens exceed the model's context of {self.context_length}; score shorter windows."
            )
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=False)
        return out.logits[0].float().cpu().numpy()

    # ---------------------------------------------------------------------------------------------- generation

    def generate(
        self, ids: list[int], settings: GenerationSettings, on_token: OnToken = None, stop_ids: StopIds = ()
    ) -> list[int]:
        """New token ids after ``ids`` (the stop id that ended generation is not included). ``on_token(id)`` is called
        for each returned id as it is produced; returning True stops generation after that id."""
        torch = self._torch
        if not ids:
            raise ValueError("generate() needs a prompt of at least one token.")
        generator = torch.Generator(device="cpu")
        if settings.seed is not None:
            generator.manual_seed(settings.seed)
        else:
            generator.seed()
        budget = min(settings.max_new_tokens, self.context_length - len(ids))
        with torch.inference_mode():
            return collect(self._tokens(ids, settings, generator, budget), on_token, stop_ids)

    def _tokens(self, ids: list[int], settings: GenerationSettings, generator, budget: int) -> Iterator[int]:
        """Decode one token at a time over the KV cache (lazily: nothing is computed past what the caller takes)."""
        torch = self._torch
        history, cache = list(ids), None
        step_input = torch.tensor([ids], device=self.device)
        for _ in range(max(budget, 0)):
            logits, cache = self._decode_step(step_input, cache)
            token = next_token(logits, history, settings, generator)
            history.append(token)
            yield token
            step_input = torch.tensor([[token]], device=self.device)

    def _decode_step(self, step_input, cache):
        """(last position's logits on CPU, updated KV cache). transformers >= 5.2x names the cache argument `cache`
        (`past_key_values` is deprecated); older 5.x only knows `past_key_values`."""
        if self._cache_arg == "cache":
            out = self.model(input_ids=step_input, cache=cache, use_cache=True, logits_to_keep=1)
            return out.logits[0, -1].cpu(), out.cache
        out = self.model(input_ids=step_input, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].cpu(), out.past_key_values

    # ---------------------------------------------------------------------------------------------- facts

    def size_bytes(self) -> int:
        return weights_size(self.path)

    def describe(self) -> dict[str, Any]:
        quant = getattr(self.model.config, "quantization_config", None)
        if quant is not None and not isinstance(quant, dict):
            quant = quant.to_dict()
        return {
            "kind": self.kind,
            "path": str(self.path),
            "device": self.device,
            "dtype": self.dtype,
            "context_length": self.context_length,
            "size_bytes": self.size_bytes(),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "quantization": quant,
        }


# ------------------------------------------------------------------------------------------------------ library calls


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _load_model(path: Path, kind: str, device: str, dtype: str | None):
    import json

    import torch
    from transformers import AutoModelForCausalLM

    config = json.loads((path / "config.json").read_text())
    stored = config.get("dtype") or config.get("torch_dtype")  # a file we read, not a config default
    torch_dtype = getattr(torch, dtype or default_dtype(device, stored))
    if kind == "gptq":
        # GPTQModel sizes a CPU worker pool from this at import time; unset it fails on 1-2 core machines.
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(1, min(2, os.cpu_count() or 1))))
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, device_map=device)
        except ImportError as err:
            raise MissingLibrary(
                f"{path}: loading a GPTQ checkpoint needs optimum and gptqmodel ({err}); "
                "install tulu-quant with its dependencies."
            ) from None
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device)
    log.debug("loaded %s (%s) on %s as %s", path, kind, device, torch_dtype)
    return model.eval()
