"""The transformers backend: a plain model directory (fp16/bf16/fp32 weights) or a GPTQ checkpoint.

Plain weights are computed in float32 on CPU (fp16 matmuls on CPU are slow and less exact) and in their stored dtype on
CUDA. A GPTQ checkpoint loads through ``AutoModelForCausalLM.from_pretrained``, which needs optimum and GPTQModel
(its kernels run on CPU and CUDA). Generation is our own loop over the KV cache, so that every token reaches
``on_token`` as soon as it exists and the caller can stop it (return True).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..config import GenerationSettings
from ..errors import MissingLibrary, UserValueError
from . import OneAtATime, OnToken, RowEnds, StopIds, check_lengths, check_prompts, pad_batch

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
SHARED_PREFIX_MIN = 32  # tokens every prompt of a batch must share before their prefix is computed once


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


def generation_config(settings: GenerationSettings, max_new_tokens: int, pad_id: int):
    """transformers' GenerationConfig for our settings: nothing of the model's own generation_config.json (no EOS:
    the caller's stop ids end rows; top_k off), so every backend samples the same way."""
    from transformers import GenerationConfig

    sample = settings.temperature > 0
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=settings.temperature if sample else None,
        top_p=settings.top_p if sample else None,
        top_k=None,
        repetition_penalty=settings.repetition_penalty,
        pad_token_id=pad_id,
        eos_token_id=None,
        bos_token_id=None,
    )


def shared_prefix(prompts: list[list[int]]) -> int:
    """Tokens at the start of every prompt, leaving each prompt at least one token of its own (0 for one prompt)."""
    if len(prompts) < 2:
        return 0
    first, limit = prompts[0], min(map(len, prompts)) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


def middle_padded(prompts: list[list[int]], prefix: int, pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """(ids, attention mask) with the padding between the shared prefix and each prompt's own tokens (pad_batch's left
    padding of what follows the prefix; with prefix 0 exactly pad_batch's): every prefix sits at positions
    0..prefix-1 (so one computation of it serves every row) and every prompt ends at the last column (so the rows
    decode side by side). The masked pads take no position: position ids count the unmasked tokens."""
    ids, mask = pad_batch([p[prefix:] for p in prompts], pad_id, left=True)
    head = prompts[0][:prefix]
    return [head + row for row in ids], [[1] * prefix + row for row in mask]


def weights_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


# ------------------------------------------------------------------------------------------------------ the backend


class TorchBackend(OneAtATime):
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
        self.pad_id = pad_id_of(self.tokenizer)
        self.eos_ids = eos_ids_of(self.model)
        self._torch = torch

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    # ---------------------------------------------------------------------------------------------- scoring

    def logits_batch(self, seqs: list[list[int]], last_only: bool = False):
        """Every position's logits per sequence (right-padded, masked), or with last_only each sequence's last
        position as one [len(seqs), vocab] array (left-padded, so the model computes only that position's logits)."""
        torch = self._torch
        check_lengths(seqs, self.context_length)
        ids, mask = pad_batch(seqs, self.pad_id, left=last_only)
        input_ids = torch.tensor(ids, device=self.device)
        attention = torch.tensor(mask, device=self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention,
                position_ids=positions,
                use_cache=False,
                logits_to_keep=1 if last_only else 0,
            )
        logits = out.logits.float()
        if last_only:
            return logits[:, -1].cpu().numpy()
        return [logits[row, : len(seq)].cpu().numpy() for row, seq in enumerate(seqs)]

    # ---------------------------------------------------------------------------------------------- generation

    def generate_batch(
        self,
        prompts: list[list[int]],
        settings: GenerationSettings,
        on_tokens: list[OnToken] | None = None,
        stop_ids: StopIds = (),
    ) -> list[list[int]]:
        """transformers' ``generate`` on the left-padded prompts, each row ended by ``RowEnds`` (run as a stopping
        criterion after every step, which also streams each row's tokens to its on_token). A row's budget is
        max_new_tokens, or less where its prompt leaves less room in the context, so a row ends as it would alone.
        Sampling draws from torch's generator seeded with settings.seed (a fresh seed when None). Prompts that share
        a prefix of SHARED_PREFIX_MIN tokens or more have it computed once (``_prefix_cache``), padded after it instead
        of before (``middle_padded``).

        transformers' loop is used rather than our own: measured on the stand-in at batch 1 (docs/benchmarks.md) it
        decodes as fast, and it batches, pads and masks correctly."""
        torch = self._torch
        check_prompts(prompts)
        budgets = [min(settings.max_new_tokens, self.context_length - len(ids)) for ids in prompts]
        ends = RowEnds(budgets, on_tokens, stop_ids, self.eos_ids)
        if all(ends.done):
            return ends.new
        prefix = shared_prefix(prompts)
        prefix = prefix if prefix >= SHARED_PREFIX_MIN else 0
        ids, mask = middle_padded(prompts, prefix, self.pad_id)
        criteria = _RowCriteria(ends, len(ids[0]))
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed if settings.seed is not None else torch.seed())
            cached = {"cache": self._prefix_cache(ids[0][:prefix], len(ids))} if prefix else {}
            self.model.generate(
                input_ids=torch.tensor(ids, device=self.device),
                attention_mask=torch.tensor(mask, device=self.device),
                generation_config=generation_config(settings, max(budgets), self.pad_id),
                stopping_criteria=[criteria],
                **cached,
            )
        return ends.new

    def _prefix_cache(self, prefix: list[int], rows: int):
        """The KV cache of a prefix every prompt shares, computed once and repeated for each row: a few-shot prompt's
        demonstrations (GSM8K's 8 exemplars, a BBH task's 3) or a prompt sampled n times (Codex-Eval) are then
        prefilled once per batch instead of once per row. generate() computes only what follows the cache."""
        out = self.model(input_ids=self._torch.tensor([prefix], device=self.device), use_cache=True, logits_to_keep=1)
        out.cache.batch_repeat_interleave(rows)
        return out.cache

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


def pad_id_of(tokenizer) -> int:
    """The id padded positions hold (masked out, so any id works): the tokenizer's pad, else its EOS, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def eos_ids_of(model) -> tuple[int, ...]:
    """The ids transformers' generate ends a sequence at (the model's generation_config, else its config)."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    return tuple(int(e) for e in (eos if isinstance(eos, list | tuple) else [eos]) if e is not None)


class _RowCriteria:
    """A transformers stopping criterion feeding each unfinished row's newest token to RowEnds."""

    def __init__(self, ends: RowEnds, prompt_width: int):
        self.ends, self.prompt_width = ends, prompt_width

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if input_ids.shape[1] > self.prompt_width:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self.ends.add(row, token)
        return torch.tensor(self.ends.done, device=input_ids.device)


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
