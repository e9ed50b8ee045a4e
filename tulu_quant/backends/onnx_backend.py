"""The ONNX backend: an export folder of `tulu-quant export-onnx`, run with onnxruntime-genai.

Scoring and generation both go through one onnxruntime-genai model (one session, the execution provider and session
options of the folder's genai_config.json):

- ``logits(ids)``: a generator sized to the sequence, ``append_tokens(ids)``, then ``get_output("logits")``, which holds
  every position's logits, shape (1, len(ids), vocab). A plain onnxruntime InferenceSession fed an empty KV cache gives
  the same numbers at the same speed (measured on the stand-in: 512 tokens in about 2 s either way on 2 threads), but
  would be a second session with its own provider and KV-input plumbing; the genai path reuses the export's own.
- ``generate``: onnxruntime-genai's search (greedy, or sampling with temperature / top_p, the same repetition penalty
  as transformers, a random seed), one token at a time so each reaches ``on_token`` as it is produced.
- ``logits_batch`` and ``generate_batch``: onnxruntime-genai's own batching (``batch_size`` rows in one generator) for
  sequences of one length; sequences of other lengths go in their own batches (``same_length_groups`` says why).

Tokenization uses the Hugging Face tokenizer files copied into the folder at export, so token ids are those of the
torch backends. onnxruntime-genai ends a generation at the model's EOS (genai_config.json) by itself: when the EOS is
not among ``stop_ids`` it is returned as the last token, as the torch backend would return it (but nothing follows).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..config import GenerationSettings
from ..errors import MissingLibrary, MissingPath, UserValueError
from . import OneAtATime, OnToken, RowEnds, StopIds, check_lengths, check_prompts

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "dml", "webgpu")
TARGETS = ("cpu", "cuda", "dml", "webgpu")  # what an export can be built for (tulu-quant export-onnx --target)
PROVIDERS = {"cuda": "CUDAExecutionProvider", "dml": "DmlExecutionProvider", "webgpu": "WebGpuExecutionProvider"}
ONNX_SUFFIXES = (".onnx", ".data", ".onnx_data")


# ------------------------------------------------------------------------------------------------------ pure helpers


def search_options(settings: GenerationSettings, prompt_len: int, budget: int) -> dict[str, Any]:
    """onnxruntime-genai search options for our settings. top_k is set to 0 (off): the builder writes top_k 50 into
    genai_config.json, which the other backends do not apply."""
    options: dict[str, Any] = {
        "max_length": prompt_len + budget,
        "do_sample": settings.temperature > 0,
        "repetition_penalty": settings.repetition_penalty,
        "top_k": 0,
    }
    if settings.temperature > 0:
        options.update(temperature=settings.temperature, top_p=settings.top_p)
    if settings.seed is not None:
        options["random_seed"] = settings.seed
    return options


def session_overlay(threads: int | None) -> str | None:
    if threads is None:
        return None
    return json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}})


def runnable_here(target: str) -> str | None:
    """None when this machine's onnxruntime has the target's execution provider, else why not. (onnxruntime-genai's
    is_webgpu_available() says True on the CPU-only wheel, so the providers onnxruntime itself lists decide.)"""
    if target == "cpu":
        return None
    import onnxruntime

    provider = PROVIDERS[target]
    return None if provider in onnxruntime.get_available_providers() else f"onnxruntime here has no {provider}"


def same_length_groups(seqs: list[list[int]], pad_id: int | None) -> list[list[int]]:
    """Indices of the sequences that can share one onnxruntime-genai batch: those of one length (no padding) that do not
    hold the pad id (which onnxruntime-genai would mask). Measured with onnxruntime-genai 0.18 on the stand-in's int4
    export: left-padded prompts in one batch get other greedy tokens and last-position logits off by 20-30 than the
    same prompts alone, so padded batches are not used; unpadded rows of one batch get the same logits as alone."""
    groups: dict[int, list[int]] = {}
    alone = []
    for index, seq in enumerate(seqs):
        if pad_id is not None and pad_id in seq:
            alone.append([index])
        else:
            groups.setdefault(len(seq), []).append(index)
    return sorted([*groups.values(), *alone])


def onnx_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file() and p.suffix in ONNX_SUFFIXES)


# ------------------------------------------------------------------------------------------------------ the backend


class OnnxBackend(OneAtATime):
    """Score and generate with an onnxruntime-genai export. ``threads``: intra-op threads (None: onnxruntime's
    default, all cores). ``device``: auto runs on the execution provider the folder was exported for."""

    def __init__(self, path: Path, kind: str = "onnx", device: str = "auto", threads: int | None = None):
        import numpy as np

        if kind != "onnx":
            raise ValueError(f"OnnxBackend handles kind 'onnx', not '{kind}'.")
        if device not in DEVICES:
            raise UserValueError(f"device '{device}' is not one of {list(DEVICES)}.")
        self.path, self.kind, self.device, self.threads = Path(path), kind, device, threads
        config_path = self.path / "genai_config.json"
        if not config_path.is_file():
            raise MissingPath(f"{self.path}: no genai_config.json; pass a folder written by `tulu-quant export-onnx`.")
        self.genai_config = json.loads(config_path.read_text())
        self.context_length = int(self.genai_config["model"]["context_length"])
        self.tokenizer = _load_tokenizer(self.path)
        self._og = _import_genai()
        self.model = _load_model(self._og, self.path, device, threads)
        self._pad_id = self.genai_config["model"].get("pad_token_id")
        eos = self.genai_config["model"].get("eos_token_id")
        self._eos_ids = set(eos if isinstance(eos, list) else [eos])
        self._np = np

    @property
    def on_gpu(self) -> bool:
        """Whether the session runs on a GPU provider (the folder's, for device auto)."""
        if self.device != "auto":
            return self.device != "cpu"
        providers = self.genai_config["model"]["decoder"].get("session_options", {}).get("provider_options", [])
        return bool(providers)

    # ---------------------------------------------------------------------------------------------- scoring

    def logits_batch(self, seqs: list[list[int]], last_only: bool = False):
        """Every position's logits per sequence, or with last_only each sequence's last position as one
        [len(seqs), vocab] array. Sequences of one length share a forward pass (see same_length_groups)."""
        check_lengths(seqs, self.context_length)
        og, np = self._og, self._np
        out: list = [None] * len(seqs)
        for group in same_length_groups(seqs, self._pad_id):
            params = og.GeneratorParams(self.model)
            params.set_search_options(batch_size=len(group), max_length=len(seqs[group[0]]))
            generator = og.Generator(self.model, params)
            generator.append_tokens(np.asarray([seqs[i] for i in group], dtype=np.int32))
            logits = np.asarray(generator.get_output("logits")).astype(np.float32, copy=False)
            for row, index in enumerate(group):
                out[index] = logits[row, -1].copy() if last_only else logits[row]
        return np.stack(out) if last_only else out

    # ---------------------------------------------------------------------------------------------- generation

    def generate_batch(
        self,
        prompts: list[list[int]],
        settings: GenerationSettings,
        on_tokens: list[OnToken] | None = None,
        stop_ids: StopIds = (),
    ) -> list[list[int]]:
        """onnxruntime-genai's search over each group of same-length prompts at once (batch_size rows), one step at a
        time so every row's token reaches its on_token as it is produced; each row ends by ``RowEnds``, and the group
        when all its rows have (or onnxruntime-genai's own end: EOS in every row, max_length)."""
        check_prompts(prompts)
        og, np = self._og, self._np
        on_tokens = on_tokens or [None] * len(prompts)
        out: list[list[int]] = [[] for _ in prompts]
        for group in same_length_groups(prompts, self._pad_id):
            length = len(prompts[group[0]])
            budget = min(settings.max_new_tokens, self.context_length - length)
            ends = RowEnds([budget] * len(group), [on_tokens[i] for i in group], stop_ids, self._eos_ids)
            if budget > 0:
                params = og.GeneratorParams(self.model)
                params.set_search_options(batch_size=len(group), **search_options(settings, length, budget))
                generator = og.Generator(self.model, params)
                generator.append_tokens(np.asarray([prompts[i] for i in group], dtype=np.int32))
                while not all(ends.done) and not generator.is_done():
                    generator.generate_next_token()
                    for row, token in enumerate(generator.get_next_tokens().tolist()):
                        ends.add(row, int(token))
            for row, index in enumerate(group):
                out[index] = ends.new[row]
        return out

    # ---------------------------------------------------------------------------------------------- facts

    def size_bytes(self) -> int:
        return onnx_size(self.path)

    def describe(self) -> dict[str, Any]:
        record = self.path / "export.json"
        export = json.loads(record.read_text()) if record.is_file() else {}
        providers = self.genai_config["model"]["decoder"].get("session_options", {}).get("provider_options", [])
        return {
            "kind": self.kind,
            "path": str(self.path),
            "device": self.device,
            "threads": self.threads,
            "providers": [next(iter(p)) for p in providers] or ["cpu"],
            "context_length": self.context_length,
            "precision": export.get("precision"),
            "target": export.get("target"),
            "source": export.get("source"),
            "size_bytes": self.size_bytes(),
        }


def genai_tokenizer_agrees(backend: OnnxBackend, text: str) -> bool:
    """Whether onnxruntime-genai's own tokenizer (what apps using the folder directly get) encodes `text` to the same
    ids as the Hugging Face tokenizer (special tokens aside)."""
    hf = backend.tokenizer(text, add_special_tokens=False).input_ids
    genai = [int(t) for t in backend._og.Tokenizer(backend.model).encode(text)]
    special = set(backend.tokenizer.all_special_ids)
    return [t for t in genai if t not in special] == hf


# ------------------------------------------------------------------------------------------------------ library calls


def _import_genai():
    try:
        import onnxruntime_genai as og
    except ImportError as err:
        raise MissingLibrary(
            f"the ONNX backend needs onnxruntime-genai ({err}); pip install 'onnxruntime-genai>=0.18' "
            "(onnxruntime-genai-cuda for CUDA)."
        ) from None
    return og


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _load_model(og, path: Path, device: str, threads: int | None):
    config = og.Config(str(path))
    overlay = session_overlay(threads)
    if overlay:
        config.overlay(overlay)
    if device != "auto":
        config.clear_providers()
        if device != "cpu":
            config.append_provider(device)
    model = og.Model(config)
    log.debug("loaded %s with onnxruntime-genai (device %s, threads %s)", path, device, threads)
    return model
