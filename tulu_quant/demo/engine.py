"""The demo's engine: one loaded model shared by every browser session, streaming answers to the page.

- A conversation becomes the prompt through tulu_quant.chat in the artifact's format; the oldest exchanges are left
  out when it would not fit the context (tulu_quant.demo.conversation).
- Streaming: the backend generates in a worker thread and hands text to the page through a queue. Closing the stream
  (Gradio cancels the event on Stop, Clear, Regenerate or a closed tab) or setting its stop event ends generation at
  the next token.
- Each generation owns its KV cache; a lock lets one answer run at a time (the backends hold one model each, and
  answers computed side by side on the same cores would only slow each other down and blur their speed figures).
- Speed: time to first token and decode tokens/s as tulu_quant.generate measures them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..artifacts import Artifact
from ..chat import Message, TextStream, prompt_ids, resolve_format, stop_strings, stop_token_ids
from ..config import GenerationSettings
from ..generate import Timing
from .conversation import InputError, fit_messages


@dataclass
class Reply:
    """An answer as it grows: the page shows `text` and `stats()` after each update."""

    text: str = ""
    times: list[float] = field(default_factory=list, repr=False)  # seconds since generation started, per token
    elapsed: float = 0.0
    prompt_tokens: int = 0
    dropped_turns: int = 0
    waiting: bool = False  # another answer holds the model
    done: bool = False
    stopped: bool = False  # ended by Stop (or a closed stream), not by EOS or the token budget

    def snapshot(self) -> Reply:
        return dataclasses.replace(self, times=list(self.times))

    @property
    def timing(self) -> Timing:
        return Timing.from_times(self.times, self.elapsed)

    def stats(self) -> str:
        if self.waiting:
            return "waiting for the model (another answer is being generated)..."
        if not self.done and not self.times:
            return "reading the prompt..."
        timing, parts = self.timing, [f"{len(self.times)} tokens"]
        if self.times:
            parts.append(f"first token {timing.ttft_s:.2f} s")
        if timing.decode_tokens_per_s == timing.decode_tokens_per_s:  # not nan
            parts.append(f"{timing.decode_tokens_per_s:.1f} tokens/s")
        if self.stopped:
            parts.append("stopped")
        if self.dropped_turns:
            parts.append(f"{self.dropped_turns} oldest exchange(s) left out to fit the context")
        return " · ".join(parts) + ("" if self.done else " ...")


class Engine:
    """One loaded backend, shared by every browser session."""

    def __init__(self, backend, artifact: Artifact, chat_format: str | None = None):
        self.backend, self.artifact, self.tokenizer = backend, artifact, backend.tokenizer
        self.chat_format = resolve_format(chat_format or artifact.chat_format or "auto", self.tokenizer)
        self.stops = stop_strings(self.chat_format)
        self.stop_ids = stop_token_ids(self.tokenizer, artifact.path)
        self.lock = threading.Lock()
        self.size_bytes = backend.size_bytes()

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        return prompt_ids(self.tokenizer, messages, self.chat_format)

    def prepare(self, messages: list[Message], settings: GenerationSettings) -> tuple[list[int], int]:
        """(prompt ids, exchanges left out) for a conversation ending with the user's message."""
        if not messages or messages[-1]["role"] != "user":
            raise InputError("The conversation must end with your message.")
        budget = self.backend.context_length - min(settings.max_new_tokens, self.backend.context_length // 2)
        fitted, dropped = fit_messages(messages, lambda m: len(self.prompt_ids(m)), budget)
        return self.prompt_ids(fitted), dropped

    def stream(
        self, messages: list[Message], settings: GenerationSettings, stop: threading.Event | None = None
    ) -> Iterator[Reply]:
        """Yield the growing answer. Closing the generator or setting `stop` ends generation at the next token."""
        ids, dropped = self.prepare(messages, settings)
        stop, closed = stop or threading.Event(), threading.Event()
        events: queue.Queue = queue.Queue()
        worker = threading.Thread(target=self._work, args=(ids, settings, (stop, closed), events), daemon=True)
        reply = Reply(prompt_tokens=len(ids), dropped_turns=dropped)
        started = False
        worker.start()
        try:
            while True:
                try:
                    batch = [events.get(timeout=None if started or reply.waiting else 0.25)]
                except queue.Empty:  # not started within 0.25 s: another answer holds the model
                    reply.waiting = True
                    yield reply.snapshot()
                    continue
                while not events.empty():
                    batch.append(events.get())
                for kind, value in batch:
                    if kind == "error":
                        raise value
                    if kind == "start":
                        started, reply.waiting = True, False
                    elif kind == "token":
                        text, reply.elapsed = value
                        reply.text = text.lstrip()
                        reply.times.append(reply.elapsed)
                    elif kind == "done":
                        text, reply.elapsed = value
                        reply.text = text.strip()  # the answer as it goes into the history (and the next prompt)
                        reply.done, reply.stopped = True, stop.is_set()
                        yield reply.snapshot()
                        return
                yield reply.snapshot()
        finally:
            closed.set()  # the page went away or the answer is over: the worker ends at its next token

    def _work(
        self, ids: list[int], settings: GenerationSettings, stops: tuple[threading.Event, ...], events: queue.Queue
    ) -> None:
        try:
            with self.lock:
                events.put(("start", None))
                text = TextStream(self.tokenizer, self.stops)
                start = time.perf_counter()

                def on_token(token: int) -> bool:
                    ended = text.add(token)
                    events.put(("token", (text.text, time.perf_counter() - start)))
                    return ended or any(event.is_set() for event in stops)

                if not any(event.is_set() for event in stops):
                    self.backend.generate(ids, settings, on_token, self.stop_ids)
                events.put(("done", (text.finish(), time.perf_counter() - start)))
        except Exception as err:  # handed to the page's thread, which raises it  # noqa: BLE001
            events.put(("error", err))


class StopSignals:
    """Per-browser-session stop events, keyed by Gradio's session hash: Stop ends that session's answer and no other.

    The event is armed when a message is sent (instantly), so a Stop pressed while the request still waits in the
    queue is not lost; the generation takes it when it starts and releases it when it ends."""

    def __init__(self):
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def arm(self, session: str) -> threading.Event:
        with self._lock:
            self._events[session] = event = threading.Event()
        return event

    def take(self, session: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(session, threading.Event())

    def release(self, session: str, event: threading.Event) -> None:
        with self._lock:
            if self._events.get(session) is event:
                del self._events[session]

    def stop(self, session: str) -> bool:
        """True when an answer of this session was waiting or running."""
        with self._lock:
            event = self._events.get(session)
        if event is not None:
            event.set()
        return event is not None

    def __len__(self) -> int:
        return len(self._events)


def compare_stream(
    engines: list[Engine], messages: list[Message], settings: GenerationSettings, stop: threading.Event | None = None
) -> Iterator[list[Reply]]:
    """The same conversation answered by each engine in turn (one at a time, so each speed is measured alone)."""
    replies = [Reply() for _ in engines]
    for index, engine in enumerate(engines):
        with contextlib.closing(engine.stream(messages, settings, stop)) as stream:
            for reply in stream:
                replies[index] = reply
                yield list(replies)
