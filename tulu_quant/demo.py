"""The browser demo's logic; demo/app.py is the Gradio page around it.

- Which artifact to serve: given a run directory, the fastest one this machine can run (the GPTQ checkpoint on CUDA,
  the int4 ONNX export on CPU), else what the run has (the recovered model when there is no export); the page says
  which one and why.
- A conversation (the chat component's history, kept by each browser session) becomes the model's prompt through
  tulu_quant.chat.render in the run's chat format; the oldest turns are left out when it would not fit the context.
- Streaming: the backend generates in a worker thread and hands text to the page through a queue. Closing the stream
  (Gradio cancels the event on Stop, Clear, Regenerate or a closed tab) or setting its stop event ends generation at
  the next token.
- One model instance per artifact serves every browser session. Each generation owns its KV cache; a lock lets one
  answer run at a time (the backends hold one model each, and answers computed side by side on the same cores would
  only slow each other down and blur their speed figures).
- Speed: time to first token and decode tokens/s as tulu_quant.generate measures them; the About panel's facts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import GenerationSettings, detect_kind
from .chat import TULU_TEMPLATE, Message, render, stop_strings
from .config import DemoConfig
from .generate import TextStream, Timing
from .manifest import MANIFEST, Manifest
from .progress import human_bytes

log = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent.parent / "demo" / "app.py"
RUN_STAGES = ("quantize", "export_onnx", "recover")  # stages whose output the demo can serve


class InputError(ValueError):
    """A message or conversation the demo refuses; the text is shown to the user as it is."""


# ------------------------------------------------------------------------------------------------------ the artifact


@dataclass(frozen=True)
class Artifact:
    path: Path
    kind: str  # torch, gptq or onnx
    precision: str | None = None  # onnx: int4/fp16/fp32; gptq: 4-bit...; torch: the stored dtype
    target: str | None = None  # onnx: the execution target it was exported for (cpu, cuda, dml, webgpu)
    stage: str | None = None  # the run stage that wrote it
    chat_format: str | None = None  # as the run recorded it (None: decided from the tokenizer)

    @property
    def label(self) -> str:
        if self.kind == "onnx":
            return f"{self.precision or ''} ONNX export ({self.target or 'cpu'})".strip()
        if self.kind == "gptq":
            return f"GPTQ {self.precision or ''} checkpoint".replace("  ", " ")
        return f"{self.precision or 'full-precision'} model"


@dataclass(frozen=True)
class Choice:
    artifact: Artifact
    reason: str
    run_dir: Path | None = None
    others: tuple[Artifact, ...] = ()


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def describe_folder(path: Path, stage: str | None = None, chat_format: str | None = None) -> Artifact:
    """What a model folder holds, from its own files (export.json, quantize_config.json, config.json)."""
    path = Path(path)
    kind = detect_kind(path)
    if kind == "onnx":
        record = _read_json(path / "export.json")
        return Artifact(path, kind, record.get("precision"), record.get("target", "cpu"), stage, chat_format)
    config = _read_json(path / "config.json")
    if kind == "gptq":
        quant = _read_json(path / "quantize_config.json") or config.get("quantization_config", {})
        return Artifact(path, kind, f"{quant['bits']}-bit" if "bits" in quant else None, None, stage, chat_format)
    return Artifact(path, kind, config.get("dtype") or config.get("torch_dtype"), None, stage, chat_format)


def run_artifacts(run_dir: Path) -> list[Artifact]:
    """The servable outputs a run directory's manifest records (finished stages whose folder still exists)."""
    manifest = Manifest.load(run_dir)
    found = []
    for stage in RUN_STAGES:
        path, entry = manifest.output_dir(stage), manifest.stages.get(stage, {})
        if path is not None and path.is_dir() and entry.get("status") == "done":
            found.append(describe_folder(path, stage, entry.get("config", {}).get("chat_format")))
    return found


def rank(artifact: Artifact, cuda: bool, onnx_targets: set[str], memory: int | None = None) -> int | None:
    """Lower is faster on this machine; None: it cannot run here. CUDA: GPTQ kernels, then a CUDA ONNX export, then
    the full-precision model. CPU: ONNX (int4 first, onnxruntime-genai), then the full-precision model (computed in
    float32), then GPTQ (transformers dequantizes on CPU), which comes first when float32 would not fit in memory."""
    if artifact.kind == "onnx":
        if (artifact.target or "cpu") not in onnx_targets:
            return None
        if cuda:
            return 1 if artifact.target == "cuda" else 3
        return 0 if artifact.precision == "int4" else 1
    if artifact.kind == "gptq":
        return 0 if cuda else 3
    bytes_per_weight = {"float32": 4}.get(artifact.precision or "", 2)
    if not cuda and memory is not None and weights_bytes(artifact.path) * 4 // bytes_per_weight > memory:  # as float32
        return 4
    return 2


def pick(
    artifacts: list[Artifact], cuda: bool, onnx_targets: set[str], memory: int | None = None
) -> tuple[Artifact, str]:
    """The artifact to serve and why, in one sentence."""
    runnable = [(r, i, a) for i, a in enumerate(artifacts) if (r := rank(a, cuda, onnx_targets, memory)) is not None]
    if not runnable:
        raise ValueError(
            f"none of {[str(a.path) for a in artifacts]} can run here (ONNX exports for "
            f"{sorted({a.target for a in artifacts})}; this machine runs {sorted(onnx_targets)}); "
            "export for cpu or pass another folder."
        )
    _, _, best = min(runnable)
    machine = "CUDA is available" if cuda else "no CUDA here"
    if best.kind == "gptq" and cuda:
        why = "its 4-bit CUDA kernels decode fastest"
    elif best.kind == "onnx":
        why = f"onnxruntime-genai runs the {best.precision or ''} export fastest on {best.target or 'cpu'}"
    elif best.kind == "gptq":
        why = "the full-precision model would not fit in memory as float32"
    else:
        why = "the run has no faster artifact that runs here (a quantized or ONNX output)"
    return best, f"{machine}: {why}"


def weights_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())


def choose(path: Path, device: str = "auto") -> Choice:
    """A model folder is served as it is; a run directory (with manifest.json) serves its fastest artifact here."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: no such directory; pass a run directory (e.g. runs/standin) or a model folder."
        )
    if not (path / MANIFEST).is_file():
        parent = path.parent if (path.parent / MANIFEST).is_file() else None
        recorded = {str(a.path.resolve()): a for a in run_artifacts(parent)} if parent else {}
        artifact = recorded.get(str(path.resolve())) or describe_folder(path)
        return Choice(artifact, "a model folder, served as given", parent)
    artifacts = run_artifacts(path)
    if not artifacts:
        raise FileNotFoundError(
            f"{path / MANIFEST}: records no finished recover, quantize or export_onnx output; "
            "run `make quantize` (or `tulu-quant run`) first."
        )
    cuda = _cuda_available() if device == "auto" else device == "cuda"
    best, reason = pick(artifacts, cuda, _onnx_targets(cuda), _available_memory())
    return Choice(best, reason, path, tuple(a for a in artifacts if a != best))


def reference_folder(path: Path) -> Path:
    """--compare: a model folder, or a run directory's recovered full-precision model."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        recovered = Manifest.load(path).output_dir("recover")
        if recovered is None or not recovered.is_dir():
            raise FileNotFoundError(
                f"{path / MANIFEST}: records no recovered model to compare with; pass a model folder."
            )
        return recovered
    detect_kind(path)
    return path


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _onnx_targets(cuda: bool) -> set[str]:
    from .stages.export_onnx import runnable_here

    return {t for t in ("cpu", "cuda", "dml", "webgpu") if runnable_here(t) is None and (t != "cuda" or cuda)}


def _available_memory() -> int:
    import psutil

    return psutil.virtual_memory().available


# ------------------------------------------------------------------------------------------------------ conversations


def message_text(content: Any) -> str:
    """A chat component's message content (a string, or Gradio 6's list of parts) -> its text."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text", "") if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return ""


def to_messages(history: list[dict[str, Any]] | None) -> list[Message]:
    """The chat component's history -> [{"role", "content"}] for tulu_quant.chat.render."""
    return [
        {"role": m["role"], "content": message_text(m.get("content"))}
        for m in history or []
        if m.get("role") in ("system", "user", "assistant")
    ]


def check_message(text: str | None, max_chars: int) -> str:
    text = (text or "").strip()
    if not text:
        raise InputError("Type a message first.")
    if len(text) > max_chars:
        raise InputError(
            f"Your message is {len(text):,} characters long; this demo accepts at most {max_chars:,}. "
            "Shorten it and send it again."
        )
    return text


def check_conversation(messages: list[Message], max_chars: int) -> None:
    total = sum(len(m["content"]) for m in messages)
    if total > max_chars:
        raise InputError(
            f"This conversation is {total:,} characters long (the limit is {max_chars:,}); press Clear "
            "to start a new one."
        )


def fit_messages(
    messages: list[Message], count: Callable[[list[Message]], int], budget: int
) -> tuple[list[Message], int]:
    """Leave out the oldest user/assistant exchanges until the prompt has at most `budget` tokens (system messages and
    the last user message are kept). Returns (messages, number of exchanges left out)."""
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    dropped = 0
    while count(system + turns) > budget:
        cut = next((i for i in range(1, len(turns)) if turns[i]["role"] == "user"), None)
        if cut is None:
            raise InputError(
                f"This message needs {count(system + turns):,} tokens but the model's context leaves "
                f"room for {max(budget, 0):,} with this many new tokens; shorten it or lower max new "
                "tokens."
            )
        turns, dropped = turns[cut:], dropped + 1
    return system + turns, dropped


def drop_last_answer(history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """For Regenerate: the history up to and including its last user message."""
    history = list(history or [])
    while history and history[-1].get("role") != "user":
        history.pop()
    if not history:
        raise InputError("Nothing to regenerate yet: send a message first.")
    return history


def settings_from_ui(
    max_new_tokens: float, temperature: float, top_p: float, repetition_penalty: float, seed: float | None
) -> GenerationSettings:
    """The page's controls -> GenerationSettings (a negative or empty seed: random)."""
    return GenerationSettings(
        max_new_tokens=max(1, int(max_new_tokens)),
        temperature=max(0.0, float(temperature)),
        top_p=min(1.0, max(1e-3, float(top_p))),
        repetition_penalty=max(1.0, float(repetition_penalty)),
        seed=None if seed is None or seed == "" or int(seed) < 0 else int(seed),
    )


# ------------------------------------------------------------------------------------------------------ generation


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
        self.chat_format = chat_format or artifact.chat_format or format_of(self.tokenizer)
        self.stops = stop_strings(self.chat_format)
        self.stop_ids = stop_token_ids(self.tokenizer, artifact.path)
        self.lock = threading.Lock()
        self.size_bytes = backend.size_bytes()

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        return self.tokenizer(render(messages, self.tokenizer, self.chat_format)).input_ids

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


def format_of(tokenizer) -> str:
    """A folder without a recorded format: tulu unless its tokenizer ships another template."""
    template = getattr(tokenizer, "chat_template", None)
    return "tokenizer" if template and template != TULU_TEMPLATE else "tulu"


def stop_token_ids(tokenizer, folder: Path) -> tuple[int, ...]:
    """The tokenizer's EOS plus every EOS id of the folder's generation_config.json."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    eos = _read_json(Path(folder) / "generation_config.json").get("eos_token_id")
    ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return tuple(sorted(ids))


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


# ------------------------------------------------------------------------------------------------------ the About panel


def quantization_facts(artifact: Artifact) -> dict[str, Any]:
    path = artifact.path
    if artifact.kind == "gptq":
        quant = _read_json(path / "quantize_config.json") or _read_json(path / "config.json").get(
            "quantization_config", {}
        )
        keys = ("bits", "group_size", "desc_act", "sym", "damp_percent", "true_sequential", "checkpoint_format")
        return {k: quant[k] for k in keys if k in quant}
    if artifact.kind == "onnx":
        record = _read_json(path / "export.json")
        facts = {k: record[k] for k in ("precision", "target", "source") if k in record}
        return facts | {k: v for k, v in record.get("builder_options", {}).items()}
    return {"dtype": artifact.precision or "unknown"}


def read_report(run_dir: Path | None) -> dict[str, Any] | None:
    if run_dir is None:
        return None
    folder = Manifest.load(run_dir).output_dir("validate")
    path = folder / "report.json" if folder is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def report_rows(
    report: dict[str, Any] | None, artifact_path: Path, limit: int = 12
) -> tuple[list[tuple[str, ...]], str]:
    """(rows of [metric, reference, this artifact, delta], verdict) for the artifact in a validation report."""
    if not report:
        return [], ""
    target = str(Path(artifact_path).resolve())
    reference = report["reference"]["metrics"]
    entry = next((c for c in report["candidates"] if str(Path(c["path"]).resolve()) == target), None)
    if entry is None and str(Path(report["reference"]["path"]).resolve()) != target:
        return [], "the validation report does not cover this artifact"

    def fmt(metric: dict[str, Any] | None) -> str:
        if not metric or metric.get("value") is None:
            return "-"
        digits = {"points": 2, "ppl": 3, "nats": 4}.get(metric["unit"], 4)
        return f"{metric['value']:.{digits}f}"

    metrics = entry["metrics"] if entry else reference
    order = sorted(
        (k for k, m in metrics.items() if m.get("value") is not None and not m.get("skipped")),
        key=lambda k: (not k.startswith("ppl."), k not in ("kl_mean", "top1_agreement"), k),
    )
    rows = []
    for key in order[:limit]:
        delta = (entry or {}).get("deltas", {}).get(key)
        shown = "-" if not delta else f"{delta['delta']:+.3g}"
        if delta and delta.get("delta_pct") is not None:
            shown += f" ({delta['delta_pct']:+.2f} %)"
        rows.append((metrics[key]["label"], fmt(reference.get(key)), fmt(metrics[key]), shown))
    verdict = "" if entry is None else ("all quality gates passed" if entry.get("passed") else "quality gates FAILED")
    return rows, verdict


def about_markdown(engine: Engine, choice: Choice, report: dict[str, Any] | None, compare: Engine | None = None) -> str:
    artifact = engine.artifact
    lines = [
        f"### {artifact.label}",
        "",
        f"- folder: `{artifact.path}`",
        f"- why this one: {choice.reason}",
        f"- size on disk: {human_bytes(engine.size_bytes)}",
        f"- chat format: `{engine.chat_format}`",
        f"- context: {engine.backend.context_length} tokens",
    ]
    info = engine.backend.describe()
    providers = f" ({', '.join(info['providers'])})" if info.get("providers") else ""
    lines += [f"- runs on: {info.get('device', 'cpu')}{providers}"]
    if choice.others:
        lines += ["- also in this run: " + ", ".join(f"{a.label} (`{a.path.name}`)" for a in choice.others)]
    facts = quantization_facts(artifact)
    lines += ["", "#### Quantization", "", *[f"- {k}: `{v}`" for k, v in facts.items()]]
    rows, verdict = report_rows(report, artifact.path)
    if rows:
        lines += [
            "",
            f"#### Validation report ({verdict})",
            "",
            "| metric | full precision | this model | delta |",
            "| --- | --- | --- | --- |",
            *[f"| {' | '.join(row)} |" for row in rows],
        ]
    elif report is None:
        lines += ["", "No validation report in this run (`tulu-quant validate` writes one)."]
    elif verdict:
        lines += ["", f"Validation report: {verdict}."]
    if compare is not None:
        lines += [
            "",
            f"Compare tab: {compare.artifact.label} at `{compare.artifact.path}` ({human_bytes(compare.size_bytes)}).",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ loading


@dataclass
class DemoModels:
    main: Engine
    choice: Choice
    compare: Engine | None
    about: str


def load_models(model: Path, compare: Path | None, cfg: DemoConfig = DemoConfig()) -> DemoModels:
    """Load the artifact to serve (and the --compare model), once, for every browser session."""
    from .generate import load

    choice = choose(model, cfg.device)
    folder = reference_folder(compare) if compare is not None else None
    if folder is not None and folder.resolve() == choice.artifact.path.resolve():
        raise ValueError(
            f"--compare {compare}: that is the model already served ({folder}); pass the fp16 model "
            "or a run directory whose recovered model differs."
        )
    log.info("demo: serving %s at %s (%s)", choice.artifact.label, choice.artifact.path, choice.reason)
    main = Engine(load(choice.artifact.path, cfg.device, cfg.threads), choice.artifact)
    other = None
    if folder is not None:
        other = Engine(load(folder, cfg.device, cfg.threads), describe_folder(folder), main.chat_format)
        log.info("demo: comparing with %s at %s", other.artifact.label, folder)
    return DemoModels(main, choice, other, about_markdown(main, choice, read_report(choice.run_dir), other))


def load_app():
    """demo/app.py as a module (the page lives beside the package, as the project layout fixes)."""
    if not APP.is_file():
        raise FileNotFoundError(f"{APP}: the demo page is missing; run the demo from a checkout of tulu-quant.")
    spec = importlib.util.spec_from_file_location("tulu_quant_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
