"""`tulu-quant generate`: one prompt through any backend (torch, GPTQ, ONNX), streamed, with its speed.

The prompt becomes a chat turn in the folder's format (tulu_quant.chat: our exports and checkpoints carry their
template; chat_format none sends the raw prompt), generation stops at an EOS id or where the model starts another turn,
and the text is written as it is produced. Timing, shared with the demo and the ONNX benchmark:

    time to first token (TTFT) = first token out - call start      (prompt processing + one decode step)
    decode tokens/s            = (new tokens - 1) / (last token out - first token out)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import OnToken, StopIds
from .config import GenerateConfig, GenerationSettings
from .errors import UserValueError

log = logging.getLogger(__name__)


@dataclass
class Timing:
    new_tokens: int
    ttft_s: float
    decode_tokens_per_s: float  # nan with fewer than 2 tokens
    total_s: float
    token_times: list[float] = field(default_factory=list, repr=False)  # seconds since the call started, per token

    @classmethod
    def from_times(cls, times: list[float], total: float) -> Timing:
        n = len(times)
        rate = (n - 1) / (times[-1] - times[0]) if n > 1 and times[-1] > times[0] else float("nan")
        return cls(n, times[0] if times else float("nan"), rate, total, times)


@dataclass
class GenerateResult:
    text: str
    chat_format: str
    prompt_tokens: int
    new_ids: list[int]
    timing: Timing
    backend: dict[str, Any]

    def summary(self) -> str:
        t = self.timing
        return (
            f"{t.new_tokens} tokens, time to first token {t.ttft_s * 1000:.0f} ms, decode "
            f"{t.decode_tokens_per_s:.1f} tokens/s ({self.prompt_tokens} prompt tokens, {self.chat_format} format, "
            f"{self.backend['kind']})"
        )


def messages_for(prompt: str, system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def timed_generate(
    backend, ids: list[int], settings: GenerationSettings, on_token: OnToken = None, stop_ids: StopIds = ()
) -> tuple[list[int], Timing]:
    """backend.generate with the arrival time of every token."""
    times: list[float] = []
    start = time.perf_counter()

    def observe(token: int):
        times.append(time.perf_counter() - start)
        return on_token(token) if on_token is not None else None

    new = backend.generate(ids, settings, observe, stop_ids)
    return new, Timing.from_times(times, time.perf_counter() - start)


def load(model_dir: Path, device: str, threads: int | None):
    """The backend for model_dir (torch, gptq, onnx or gguf, detected). threads: onnxruntime's intra-op threads for
    ONNX, llama.cpp's for GGUF, torch's thread count (process-wide) otherwise; None leaves the libraries' defaults."""
    from .backends import detect_kind, load_backend

    kind = detect_kind(Path(model_dir))
    if kind in ("onnx", "gguf"):
        return load_backend(Path(model_dir), kind, device=device, threads=threads)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return load_backend(Path(model_dir), kind, device=device)


def generate(
    backend,
    messages: list[dict[str, str]],
    chat_format: str,
    settings: GenerationSettings,
    write: Callable[[str], Any] | None = None,
) -> GenerateResult:
    """Answer a conversation with a loaded backend, streaming the text to `write`."""
    from .chat import TextStream, prompt_ids, resolve_format, stop_strings, stop_token_ids

    tokenizer = backend.tokenizer
    fmt = resolve_format(chat_format, tokenizer)
    ids = prompt_ids(tokenizer, messages, fmt)
    stream = TextStream(tokenizer, stop_strings(fmt), write)
    new, timing = timed_generate(backend, ids, settings, stream.add, stop_token_ids(tokenizer, backend.path))
    return GenerateResult(stream.finish(), fmt, len(ids), new, timing, backend.describe())


def run(
    model_dir: Path,
    prompt: str,
    cfg: GenerateConfig,
    write: Callable[[str], Any] | None = None,
    log_file: Path | None = None,
) -> GenerateResult:
    """Generate for the prompt with the model in model_dir (settings, format, device, threads and system message from
    cfg), streaming the text to `write`. The libraries' console output while the model loads goes to log_file."""
    from .progress import captured

    if not prompt.strip():
        raise UserValueError("--prompt is empty; pass the user message to reply to, e.g. --prompt 'Hello'.")
    with captured(log_file):
        backend = load(model_dir, cfg.device, cfg.threads)
    return generate(backend, messages_for(prompt, cfg.system), cfg.chat_format, cfg.settings, write)
