"""The GGUF backend: a file of `tulu-quant export-gguf` (or any LLaMA-architecture GGUF), run with llama.cpp through
llama-cpp-python.

llama-cpp-python's ``Llama`` is one model and one context with one sequence, so the backend keeps two of them over the
same file (the weights are memory-mapped, so both share one copy of them in RAM), each set up for its job:

- scoring (``logits_batch``): a context that keeps every position's logits (``logits_all``; llama.cpp otherwise keeps
  only the last). ``eval(ids)`` after ``reset()`` runs the sequence in batches of ``n_batch`` tokens and fills
  ``scores[:len(ids)]``. llama-cpp-python's high-level API runs one sequence per context, so a batch of sequences is
  scored one after another; llama.cpp already batches the tokens of each sequence, which is where the CPU time goes.
- generation (``generate_batch``): a context without the all-positions logits (a prompt is then processed without
  the vocabulary projection of every position, as llama.cpp's own tools do), and llama.cpp's sampler chain set to
  what transformers does with the same settings: greedy at temperature 0, otherwise temperature and top-p only
  (top-k, min-p off), the repetition penalty over every token seen (``last_n_tokens_size`` = the context), a seed.
  Tokens are yielded one at a time, so each reaches ``on_token`` as it is produced (streaming). Prompts run one after
  another, each ended by ``RowEnds`` exactly as alone.

Tokenization uses the Hugging Face tokenizer files beside the GGUF (our export copies them), so token ids are those of
the other backends; a GGUF without them uses the tokenizer transformers reads out of the GGUF itself. The context is
the model's trained context capped at ``MAX_CONTEXT``: the scoring context holds ``context x vocabulary`` float32
logits (1.6 GB for the stand-in's 8192 x 49153, 0.8 GB at 4096), and no benchmark prompt is longer.
"""

from __future__ import annotations

import logging
import os
import weakref
from pathlib import Path
from typing import Any

from ..config import GenerationSettings
from ..errors import MissingLibrary, MissingPath, UserValueError
from . import OneAtATime, OnToken, RowEnds, StopIds, check_lengths, check_prompts

log = logging.getLogger(__name__)

MAX_CONTEXT = 4096
DEVICES = ("auto", "cpu", "cuda")
RECORD = "gguf.json"  # what export_gguf writes beside its files (the types, in the configured order)


def gguf_files(folder: Path) -> list[Path]:
    """The GGUF model files of an export folder, in the record's order (the first configured type first); the
    importance matrix (imatrix.gguf) is not a model."""
    import json

    folder = Path(folder)
    record = folder / RECORD
    if record.is_file():
        listed = [folder / f["file"] for f in json.loads(record.read_text()).get("files", [])]
        return [p for p in listed if p.is_file()]
    return sorted(p for p in folder.glob("*.gguf") if p.name != "imatrix.gguf")


def resolve_file(path: Path) -> Path:
    """A .gguf file as given; a folder: its first model file (gguf_files)."""
    path = Path(path)
    if path.is_file():
        return path
    files = gguf_files(path) if path.is_dir() else []
    if not files:
        raise MissingPath(f"{path}: no .gguf model file; pass a file (or folder) written by `tulu-quant export-gguf`.")
    if len(files) > 1:
        log.info("%s holds %d GGUF files; using %s (pass a file to choose another)", path, len(files), files[0].name)
    return files[0]


def default_threads() -> int:
    """Every core this process may run on (llama-cpp-python's own default is half the CPU count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sampler_options(settings: GenerationSettings) -> dict[str, Any]:
    """llama-cpp-python ``generate`` arguments that sample as transformers does with the same settings."""
    return {
        "temp": settings.temperature,  # 0: llama.cpp's greedy sampler
        "top_p": settings.top_p,
        "top_k": 0,  # off (transformers' top_k is off in our settings)
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_penalty": settings.repetition_penalty,
    }


class GgufBackend(OneAtATime):
    """Score and generate with a GGUF file through llama.cpp. ``threads``: llama.cpp threads (None: every core).
    ``device``: cuda offloads every layer (a llama-cpp-python built with CUDA), cpu none, auto when it can."""

    def __init__(self, path: Path, kind: str = "gguf", device: str = "auto", threads: int | None = None):
        if kind != "gguf":
            raise ValueError(f"GgufBackend handles kind 'gguf', not '{kind}'.")
        if device not in DEVICES:
            raise UserValueError(f"device '{device}' is not one of {list(DEVICES)}.")
        self._llama_cpp = _import_llama_cpp()
        self.path, self.kind, self.device = resolve_file(path), kind, device
        self.threads = threads or default_threads()
        self.n_gpu_layers = 0 if device == "cpu" or not self._llama_cpp.llama_supports_gpu_offload() else -1
        if device == "cuda" and self.n_gpu_layers == 0:
            raise UserValueError(
                "device cuda: this llama-cpp-python was built without GPU offload; reinstall it with "
                "CMAKE_ARGS='-DGGML_CUDA=on' or use device cpu."
            )
        self.metadata = read_metadata(self.path)  # first: it says in one sentence when the file is not GGUF
        self.tokenizer = _load_tokenizer(self.path)
        self._scorer = self._generator = None
        self.context_length = context_limit(self.metadata)
        eos = self.metadata.get("tokenizer.ggml.eos_token_id")
        self._eos_ids = {int(eos)} if eos is not None else set()
        self._models: list = []  # closed by close(), or when the backend is collected or the interpreter exits
        weakref.finalize(self, _close_all, self._models)

    @property
    def on_gpu(self) -> bool:
        return self.n_gpu_layers != 0

    def _open(self, logits_all: bool, n_ctx: int):
        """A llama.cpp model + context over the file (verbose off: llama.cpp's load report is not printed)."""
        llm = self._llama_cpp.Llama(
            str(self.path),
            n_ctx=n_ctx,
            n_batch=512,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            n_gpu_layers=self.n_gpu_layers,
            logits_all=logits_all,
            last_n_tokens_size=n_ctx,
            verbose=False,
        )
        self._models.append(llm)
        return llm

    def _scoring(self):
        if self._scorer is None:
            self._scorer = self._open(logits_all=True, n_ctx=self.context_length)
        return self._scorer

    def _generation(self):
        if self._generator is None:
            self._generator = self._open(logits_all=False, n_ctx=self.context_length)
        return self._generator

    # ---------------------------------------------------------------------------------------------- scoring

    def logits_batch(self, seqs: list[list[int]], last_only: bool = False):
        """Every position's logits per sequence (a copy of llama.cpp's), or with last_only each sequence's last
        position as one [len(seqs), vocab] array; sequences one after another (see the module's docstring)."""
        import numpy as np

        check_lengths(seqs, self.context_length)
        llm = self._scoring()
        out = []
        for ids in seqs:
            llm.reset()
            llm.eval(ids)
            scores = llm.scores[: len(ids)]
            out.append(scores[-1].copy() if last_only else np.array(scores, dtype=np.float32))
        return np.stack(out) if last_only else out

    # ---------------------------------------------------------------------------------------------- generation

    def generate_batch(
        self,
        prompts: list[list[int]],
        settings: GenerationSettings,
        on_tokens: list[OnToken] | None = None,
        stop_ids: StopIds = (),
    ) -> list[list[int]]:
        """Each prompt in turn through llama.cpp's sampler, one token at a time (streaming); each row ends by
        ``RowEnds``: a stop id, its on_token returning True, its budget, or the model's EOS."""
        import random

        check_prompts(prompts)
        llm = self._generation()
        on_tokens = on_tokens or [None] * len(prompts)
        out: list[list[int]] = []
        for ids, on_token in zip(prompts, on_tokens):
            budget = min(settings.max_new_tokens, self.context_length - len(ids))
            ends = RowEnds([budget], [on_token], stop_ids, tuple(self._eos_ids))
            llm.set_seed(settings.seed if settings.seed is not None else random.randrange(2**31))
            if budget > 0:
                for token in llm.generate(ids, reset=True, **sampler_options(settings)):
                    if ends.add(0, int(token)):
                        break
            out.append(ends.new[0])
        return out

    # ---------------------------------------------------------------------------------------------- facts

    def llama_tokenizer_agrees(self, text: str) -> bool:
        """Whether llama.cpp's own tokenizer (what llama.cpp, Ollama and LM Studio use) encodes `text` to the same ids
        as the Hugging Face tokenizer (special tokens aside)."""
        hf = self.tokenizer(text, add_special_tokens=False).input_ids
        llama = self._generation().tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return [int(t) for t in llama] == hf

    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def close(self) -> None:
        _close_all(self._models)
        self._scorer = self._generator = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "device": "cuda" if self.on_gpu else "cpu",
            "threads": self.threads,
            "context_length": self.context_length,
            "type": gguf_type(self.metadata),
            "llama_cpp_python": getattr(self._llama_cpp, "__version__", None),
            "size_bytes": self.size_bytes(),
        }


def read_metadata(path: Path) -> dict[str, Any]:
    """The file's key/value metadata (scalars and short arrays), read with the gguf package without loading weights."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(path).fields.items()
    except (ValueError, IndexError, KeyError, OSError) as err:  # what the reader raises on a malformed file
        raise UserValueError(
            f"{path}: not a readable GGUF file ({str(err).splitlines()[0][:160]}); re-export it with "
            "`tulu-quant export-gguf` or re-download it."
        ) from None
    return {key: field.contents() for key, field in fields if len(field.data) <= 64}  # not the vocabulary


def context_limit(metadata: dict[str, Any]) -> int:
    """The context the backend runs a file at: its trained context capped at MAX_CONTEXT."""
    trained = metadata.get(f"{metadata.get('general.architecture')}.context_length") or MAX_CONTEXT
    return min(int(trained), MAX_CONTEXT)


def gguf_type(metadata: dict[str, Any]) -> str | None:
    """The file's quantization type name (general.file_type, llama.h's LLAMA_FTYPE), e.g. Q4_K_M."""
    from gguf import LlamaFileType

    try:
        value = LlamaFileType(int(metadata["general.file_type"]))
    except (KeyError, ValueError, TypeError):
        return None
    return value.name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _close_all(models: list) -> None:
    while models:
        models.pop().close()


# ------------------------------------------------------------------------------------------------------ library calls


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as err:
        raise MissingLibrary(
            f"the GGUF backend needs llama-cpp-python ({err}); `make install` builds it, or: "
            "CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON' pip install "
            "llama-cpp-python==0.3.36."
        ) from None
    return llama_cpp


def _load_tokenizer(path: Path):
    """The Hugging Face tokenizer files beside the file, else the tokenizer inside the GGUF (transformers reads it)."""
    from transformers import AutoTokenizer

    folder = path.parent
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file():
        return AutoTokenizer.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder, gguf_file=path.name)
