"""`tulu-quant generate`: one prompt through any backend (torch, GPTQ, ONNX), streamed, with its speed.

The prompt is formatted as a chat turn (the folder's own chat template, which our exports and checkpoints carry, else
the tulu format; or none with chat_format "none"), generation stops at the EOS or where the model starts another turn,
and the text is written as it is produced. Timing, shared with tulu_quant.bench_onnx:

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

from .backends import GenerationSettings

log = logging.getLogger(__name__)

CHAT_FORMATS = ("auto", "tulu", "tokenizer", "none")


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
    prompt_tokens: int
    new_ids: list[int]
    timing: Timing
    backend: dict[str, Any]

    def summary(self) -> str:
        t = self.timing
        return (
            f"{t.new_tokens} tokens, time to first token {t.ttft_s * 1000:.0f} ms, decode {t.decode_tokens_per_s:.1f} "
            f"tokens/s ({self.prompt_tokens} prompt tokens, {self.backend['kind']})"
        )


# ------------------------------------------------------------------------------------------------------ pure helpers


def resolve_format(requested: str, tokenizer) -> str:
    """auto: the tokenizer's own template when it has one (ours carry the run's format), else tulu."""
    if requested not in CHAT_FORMATS:
        raise ValueError(f"chat format '{requested}' is not one of {list(CHAT_FORMATS)}.")
    if requested != "auto":
        return requested
    return "tokenizer" if getattr(tokenizer, "chat_template", None) else "tulu"


def prompt_ids(tokenizer, prompt: str, fmt: str, system: str | None = None) -> list[int]:
    from .chat import render

    if fmt == "none":
        return tokenizer(prompt).input_ids
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer(render(messages, tokenizer, fmt)).input_ids


class TextStream:
    """Turn token ids into text pieces as they arrive: decodes the whole answer each time (so multi-byte characters
    and merged spaces come out right), holds back an incomplete character and anything that may be the start of a
    stop string, and reports when a stop string appeared (the text is cut before it)."""

    def __init__(self, tokenizer, stops: list[str], write: Callable[[str], Any] | None = None):
        self.tokenizer, self.stops, self.write = tokenizer, stops, write or (lambda piece: None)
        self.ids: list[int] = []
        self.text = ""  # what has been written
        self.stopped = False

    def _safe_end(self, text: str) -> int:
        """Length of the prefix that can be written: no trailing replacement character (a character whose bytes are
        still coming) and no tail that could grow into a stop string."""
        end = len(text.rstrip("\ufffd"))
        held = 0
        for stop in self.stops:
            held = max([held] + [k for k in range(1, min(len(stop), end + 1)) if text[:end].endswith(stop[:k])])
        return end - held

    def add(self, token: int) -> bool:
        """Add one token; True when a stop string ended the answer."""
        self.ids.append(token)
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = min((full.find(s) for s in self.stops if s in full), default=-1)
        if cut >= 0:
            self._emit(full[:cut])
            self.stopped = True
            return True
        self._emit(full[: self._safe_end(full)])
        return False

    def finish(self) -> str:
        if not self.stopped:
            self._emit(self.tokenizer.decode(self.ids, skip_special_tokens=True))
        return self.text

    def _emit(self, upto: str) -> None:
        if len(upto) > len(self.text) and upto.startswith(self.text):
            self.write(upto[len(self.text) :])
            self.text = upto


# ------------------------------------------------------------------------------------------------------ generation


def timed_generate(
    backend,
    ids: list[int],
    settings: GenerationSettings,
    on_token: Callable[[int], bool | None] | None = None,
    stop_ids: tuple[int, ...] = (),
) -> tuple[list[int], Timing]:
    """backend.generate with the arrival time of every token."""
    times: list[float] = []
    start = time.perf_counter()

    def observe(token: int):
        times.append(time.perf_counter() - start)
        return on_token(token) if on_token is not None else None

    new = backend.generate(ids, settings, observe, stop_ids)
    return new, Timing.from_times(times, time.perf_counter() - start)


def load(model_dir: Path, device: str = "auto", threads: int | None = None):
    """The backend for model_dir (torch, gptq or onnx, detected). threads: onnxruntime's intra-op threads for ONNX,
    torch's thread count (process-wide) otherwise; None leaves the libraries' defaults."""
    from .backends import detect_kind, load_backend

    kind = detect_kind(Path(model_dir))
    if kind == "onnx":
        return load_backend(Path(model_dir), kind, device=device, threads=threads)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return load_backend(Path(model_dir), kind, device=device)


def run(
    model_dir: Path,
    prompt: str,
    settings: GenerationSettings = GenerationSettings(),
    chat_format: str = "auto",
    system: str | None = None,
    write: Callable[[str], Any] | None = None,
    device: str = "auto",
    threads: int | None = None,
    log_file: Path | None = None,
) -> GenerateResult:
    """Generate for the prompt with the model in model_dir, streaming the text to `write` (e.g. sys.stdout.write).
    The libraries' console output while the model loads goes to log_file (when given)."""
    from .chat import stop_strings
    from .progress import captured

    with captured(log_file):
        backend = load(model_dir, device, threads)
    tokenizer = backend.tokenizer
    fmt = resolve_format(chat_format, tokenizer)
    ids = prompt_ids(tokenizer, prompt, fmt, system)
    stream = TextStream(tokenizer, stop_strings(fmt) if fmt == "tulu" else [], write)
    stop_ids = tuple(i for i in {tokenizer.eos_token_id} if i is not None)
    new, timing = timed_generate(backend, ids, settings, stream.add, stop_ids)
    return GenerateResult(stream.finish(), len(ids), new, timing, backend.describe())
