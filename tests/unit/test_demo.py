"""The demo's logic without a browser: artifact choice, history -> prompt, streaming, stop, sessions, About panel."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
import tiny

from tulu_quant import artifacts
from tulu_quant.artifacts import Artifact
from tulu_quant.chat import TULU_TEMPLATE
from tulu_quant.config import ConfigError, DemoConfig, GenerationSettings, build
from tulu_quant.demo import about, conversation, engine
from tulu_quant.demo.conversation import InputError
from tulu_quant.demo.engine import Engine
from tulu_quant.manifest import Manifest

WORDS = "the quick brown fox jumps over lazy dog hello you said bye a cat stop".split()


def word_tokenizer():
    return tiny.word_tokenizer(WORDS, chat_tokens=True)


class FakeBackend:
    """Answers "you said" + the last user turn's words (so every answer shows which conversation it belongs to), one
    token every `delay` seconds; records prompts and how many generations ran at once."""

    kind = "torch"

    def __init__(self, tokenizer, delay: float = 0.0, context_length: int = 256, script=None, fail: bool = False):
        self.tokenizer, self.delay, self.context_length = tokenizer, delay, context_length
        self.script, self.fail = script, fail
        self.prompts, self.produced, self.active, self.max_active = [], [], 0, 0
        self._count = threading.Lock()

    def answer(self, ids: list[int]) -> list[int]:
        if self.script is not None:
            return list(self.script)
        user = self.tokenizer.convert_tokens_to_ids("<|user|>")
        last = len(ids) - 1 - ids[::-1].index(user)
        said = [t for t in ids[last + 1 :] if t != self.tokenizer.convert_tokens_to_ids("<|assistant|>")]
        return self.tokenizer.convert_tokens_to_ids(["you", "said"]) + said

    def generate(self, ids, settings, on_token=None, stop_ids=()):
        with self._count:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.prompts.append(list(ids))
            if self.fail:
                raise RuntimeError("backend exploded")
            new = []
            for token in self.answer(ids)[: settings.max_new_tokens]:
                time.sleep(self.delay)
                if token in stop_ids:
                    break
                new.append(token)
                self.produced.append(token)
                if on_token is not None and on_token(token):
                    break
            return new
        finally:
            with self._count:
                self.active -= 1

    def size_bytes(self) -> int:
        return 1234

    def describe(self):
        return {"kind": self.kind, "device": "cpu"}


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def engine_for(backend, fmt="tulu", path=Path("/nonexistent")) -> Engine:
    return Engine(backend, Artifact(path, "torch", "float16"), fmt)


def ids_of(tokenizer, words: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids(words.split())


GREEDY = GenerationSettings(max_new_tokens=64)


# ---------------------------------------------------------------------------------------------------- history -> prompt


def test_gradio_history_becomes_messages():
    history = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "fox"}],
            "metadata": None,
        },
        {"role": "assistant", "content": "the dog"},
        {"role": "user", "content": [{"type": "file", "file": {"path": "/etc/passwd"}}]},
        {"role": "tool", "content": "ignored"},
    ]
    assert conversation.to_messages(history) == [
        {"role": "user", "content": "hello fox"},
        {"role": "assistant", "content": "the dog"},
        {"role": "user", "content": ""},
    ]
    assert conversation.to_messages(None) == []


def test_multi_turn_prompt_is_the_tulu_format(tokenizer):
    engine = engine_for(FakeBackend(tokenizer))
    messages = [
        {"role": "user", "content": "hello fox"},
        {"role": "assistant", "content": "the dog"},
        {"role": "user", "content": "bye"},
    ]
    expected = "<|user|>\nhello fox\n<|assistant|>\nthe dog</s>\n<|user|>\nbye\n<|assistant|>\n"
    assert engine.prompt_ids(messages) == tokenizer(expected).input_ids
    assert engine.stops == ["<|user|>", "<|assistant|>"] and engine.stop_ids == (tokenizer.eos_token_id,)


def test_tokenizer_format_uses_the_folders_template(tokenizer, tmp_path):
    tok = word_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 2]}))
    engine = Engine(FakeBackend(tok), Artifact(tmp_path, "torch"))  # no recorded format: from the tokenizer
    assert engine.chat_format == "tokenizer" and engine.stops == [] and engine.stop_ids == (1, 2)
    assert engine.prompt_ids([{"role": "user", "content": "hello"}]) == tok("user hello ").input_ids
    tok.chat_template = TULU_TEMPLATE  # our folders ship Tulu's template: served in the tulu format
    assert Engine(FakeBackend(tok), Artifact(tmp_path, "torch")).chat_format == "tulu"


def test_oldest_exchanges_are_left_out_to_fit_the_context(tokenizer):
    backend = FakeBackend(tokenizer, context_length=40)
    engine = engine_for(backend)
    long_turn = " ".join(["fox"] * 12)
    messages = [
        {"role": "system", "content": "cat"},
        {"role": "user", "content": long_turn},
        {"role": "assistant", "content": long_turn},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "dog"},
        {"role": "user", "content": "bye"},
    ]
    ids, dropped = engine.prepare(messages, GenerationSettings(max_new_tokens=10))
    assert dropped == 1 and len(ids) <= 30
    assert ids == engine.prompt_ids([messages[0], *messages[3:]])
    with pytest.raises(InputError, match="shorten it or lower max new tokens"):
        engine.prepare([{"role": "user", "content": " ".join(["fox"] * 40)}], GenerationSettings(max_new_tokens=10))
    with pytest.raises(InputError, match="must end with your message"):
        engine.prepare(messages[:-1], GREEDY)


def test_message_and_conversation_limits():
    assert conversation.check_message("  hello  ", 10) == "hello"
    with pytest.raises(InputError, match="Type a message first"):
        conversation.check_message("   ", 10)
    with pytest.raises(InputError, match="11 characters long; this demo accepts at most 10"):
        conversation.check_message("a" * 11, 10)
    conversation.check_conversation([{"role": "user", "content": "a" * 10}], 10)
    with pytest.raises(InputError, match="press Clear"):
        conversation.check_conversation(
            [{"role": "user", "content": "a" * 6}, {"role": "assistant", "content": "b" * 5}], 10
        )


def test_regenerate_drops_the_last_answer_only():
    history = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    assert conversation.drop_last_answer(history) == history[:3]
    assert conversation.drop_last_answer(history[:3]) == history[:3]
    with pytest.raises(InputError, match="Nothing to regenerate"):
        conversation.drop_last_answer([])


def test_settings_from_the_page():
    settings = conversation.settings_from_ui(100.0, 0.7, 0.9, 1.1, -1)
    assert settings == GenerationSettings(
        max_new_tokens=100, temperature=0.7, top_p=0.9, repetition_penalty=1.1, seed=None
    )
    assert conversation.settings_from_ui(0, -1, 0, 0.5, 7) == GenerationSettings(
        max_new_tokens=1, temperature=0.0, top_p=1e-3, repetition_penalty=1.0, seed=7
    )
    assert conversation.settings_from_ui(10, 0, 1, 1, None).seed is None


# --------------------------------------------------------------------------------------------------- streaming and stop


def test_stream_grows_token_by_token_and_reports_speed(tokenizer):
    backend = FakeBackend(tokenizer, delay=0.03)
    replies = list(engine_for(backend).stream([{"role": "user", "content": "hello brown fox"}], GREEDY))
    texts = [r.text for r in replies if not r.waiting]
    assert texts[-1] == "you said hello brown fox"
    assert all(a == b[: len(a)] for a, b in zip(texts, texts[1:]))  # each update extends the previous one
    assert len(set(texts)) >= 3  # streamed, not delivered at once
    final = replies[-1]
    assert final.done and not final.stopped and len(final.times) == 5 and final.prompt_tokens == len(backend.prompts[0])
    assert 0.03 <= final.timing.ttft_s < final.elapsed and 0 < final.timing.decode_tokens_per_s <= 1 / 0.03
    stats = final.stats()
    assert re.fullmatch(r"5 tokens · first token \d+\.\d\d s · \d+\.\d tokens/s", stats), stats
    assert replies[0].stats().endswith("...")  # an update in flight says so


def test_stop_event_ends_generation_at_the_next_token(tokenizer):
    backend = FakeBackend(tokenizer, delay=0.05, script=ids_of(tokenizer, "the quick brown fox jumps over " * 5))
    stop, seen = threading.Event(), None
    replies = []
    for reply in engine_for(backend).stream([{"role": "user", "content": "hello"}], GREEDY, stop):
        replies.append(reply)
        if len(reply.times) >= 3 and seen is None:
            stop.set()
            seen = len(reply.times)
    assert replies[-1].done and replies[-1].stopped and "stopped" in replies[-1].stats()
    assert seen <= len(backend.produced) <= seen + 2 < 30  # the token in flight at most, then nothing
    assert replies[-1].text.split() == tokenizer.decode(backend.produced).split()


def test_closing_the_stream_stops_generation_and_frees_the_model(tokenizer):
    backend = FakeBackend(tokenizer, delay=0.05, script=ids_of(tokenizer, "fox " * 60))
    engine = engine_for(backend)
    stream = engine.stream([{"role": "user", "content": "hello"}], GREEDY)
    while (seen := len(next(stream).times)) < 2:
        pass
    stream.close()  # what Gradio does on Stop / Clear / a closed tab
    assert engine.lock.acquire(timeout=1.0)
    engine.lock.release()
    produced = len(backend.produced)
    time.sleep(0.2)
    assert produced == len(backend.produced) <= seen + 2


def test_stop_strings_and_eos_end_the_answer(tokenizer):
    script = ids_of(tokenizer, "the dog <|user|> hello")
    reply = list(engine_for(FakeBackend(tokenizer, script=script)).stream([{"role": "user", "content": "a"}], GREEDY))[
        -1
    ]
    assert reply.text == "the dog" and reply.done and not reply.stopped
    script = ids_of(tokenizer, "the cat </s> hello")
    backend = FakeBackend(tokenizer, script=script)
    reply = list(engine_for(backend).stream([{"role": "user", "content": "a"}], GREEDY))[-1]
    assert reply.text == "the cat" and backend.produced == script[:2]


def test_stop_pressed_while_queued_skips_generation(tokenizer):
    backend = FakeBackend(tokenizer)
    stop = threading.Event()
    stop.set()
    replies = list(engine_for(backend).stream([{"role": "user", "content": "hello"}], GREEDY, stop))
    assert replies[-1].done and replies[-1].stopped and replies[-1].text == "" and backend.prompts == []


def test_stop_signals_are_per_session():
    signals = engine.StopSignals()
    first, second = signals.arm("a"), signals.take("b")
    assert signals.stop("a") and first.is_set() and not second.is_set()
    signals.release("a", first)
    assert not signals.stop("a") and len(signals) == 1
    armed = signals.arm("c")  # armed when the message is sent: a Stop while queued reaches the generation
    assert signals.stop("c") and signals.take("c") is armed and armed.is_set()
    newer = signals.arm("b")  # a newer answer of the session: releasing the older one leaves it in place
    signals.release("b", second)
    assert signals.take("b") is newer and not newer.is_set()


def test_backend_errors_reach_the_page(tokenizer):
    engine = engine_for(FakeBackend(tokenizer, fail=True))
    with pytest.raises(RuntimeError, match="backend exploded"):
        list(engine.stream([{"role": "user", "content": "a"}], GREEDY))
    assert not engine.lock.locked()


def test_simultaneous_sessions_share_one_model_without_mixing(tokenizer):
    backend = FakeBackend(tokenizer, delay=0.06)
    engine = engine_for(backend)
    conversations = {
        f"s{k}": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": words},
        ]
        for k, words in enumerate(["quick fox", "lazy dog", "brown cat", "bye bye"])
    }
    results, waited = {}, {}

    def chat(session: str) -> None:
        replies = list(engine.stream(conversations[session], GREEDY))
        results[session], waited[session] = replies[-1].text, any(r.waiting for r in replies)

    threads = [threading.Thread(target=chat, args=(s,)) for s in conversations]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == {s: "you said " + c[-1]["content"] for s, c in conversations.items()}
    assert backend.max_active == 1 and any(waited.values())  # one generation at a time; the others were told to wait


def test_compare_answers_with_each_model_in_turn(tokenizer):
    first, second = FakeBackend(tokenizer, delay=0.01), FakeBackend(tokenizer, script=ids_of(tokenizer, "the cat"))
    updates = list(
        engine.compare_stream(
            [engine_for(first), engine_for(second)], [{"role": "user", "content": "fox"}], GREEDY, threading.Event()
        )
    )
    assert [u.text for u in updates[-1]] == ["you said fox", "the cat"] and all(u.done for u in updates[-1])
    assert all(u[1].text == "" for u in updates if not u[0].done)  # the second model starts after the first finished


# ------------------------------------------------------------------------------------------------------ which artifact


def folder(root: Path, name: str, kind: str, **record) -> Path:
    path = root / name
    path.mkdir(parents=True)
    if kind == "onnx":
        (path / "genai_config.json").write_text(json.dumps({"model": {"context_length": 64}}))
        (path / "export.json").write_text(json.dumps(record))
        return path
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "dtype": "float16"}))
    (path / "model.safetensors").write_bytes(b"\0" * 1000)
    if kind == "gptq":
        (path / "quantize_config.json").write_text(json.dumps({"bits": 4, "group_size": 128, "sym": True}))
    return path


def a(kind, precision=None, target=None, path=Path("/x")) -> Artifact:
    return Artifact(path, kind, precision, target)


def test_fastest_artifact_for_the_machine(tmp_path):
    torch_fp16 = Artifact(folder(tmp_path, "recovered", "torch"), "torch", "float16")
    gptq, int4 = a("gptq", "4-bit"), a("onnx", "int4", "cpu")
    best, reason = artifacts.pick([torch_fp16, gptq, int4], cuda=False, onnx_targets={"cpu"})
    assert best == int4 and reason.startswith("no CUDA here: onnxruntime-genai")
    assert artifacts.pick([torch_fp16, gptq, int4], cuda=True, onnx_targets={"cpu", "cuda"})[0] == gptq
    best, reason = artifacts.pick([torch_fp16, gptq], cuda=False, onnx_targets={"cpu"})  # no export: fp16
    assert (
        best == torch_fp16
        and reason == "no CUDA here: the run has no faster artifact that runs here (a quantized or ONNX output)"
    )
    assert artifacts.pick([torch_fp16], cuda=False, onnx_targets={"cpu"}) == (torch_fp16, reason)
    # float32 of a 1000-byte fp16 checkpoint needs 2000 bytes: with less memory GPTQ is the one that runs
    best, reason = artifacts.pick([torch_fp16, gptq], cuda=False, onnx_targets={"cpu"}, memory=1500)
    assert best == gptq and "would not fit in memory" in reason
    cuda_export = a("onnx", "int4", "cuda")
    assert artifacts.rank(cuda_export, cuda=False, onnx_targets={"cpu"}) is None
    with pytest.raises(ValueError, match="can run here"):
        artifacts.pick([cuda_export], cuda=False, onnx_targets={"cpu"})
    assert artifacts.pick([a("onnx", "fp32", "cpu"), int4], cuda=False, onnx_targets={"cpu"})[0] == int4


def run_dir_with(tmp_path: Path, stages: dict[str, Path]) -> Path:
    manifest = Manifest.load(tmp_path)
    for stage, path in stages.items():
        manifest.record(
            stage,
            config_hash="x",
            config={"chat_format": "tokenizer"},
            inputs=[],
            input_prints={},
            outputs=[path],
            seconds=1.0,
            peak_rss=1,
            summary={},
        )
    manifest.save()
    return tmp_path


def test_choose_reads_the_run_directory(tmp_path):
    recovered, gptq = folder(tmp_path, "recovered", "torch"), folder(tmp_path, "gptq", "gptq")
    onnx = folder(tmp_path, "onnx", "onnx", precision="int4", target="cpu", source="gptq")
    run_dir_with(tmp_path, {"recover": recovered, "quantize": gptq, "export_onnx": onnx})
    choice = artifacts.choose(tmp_path, device="cpu")
    assert choice.artifact.path == onnx and choice.artifact.label == "int4 ONNX export (cpu)"
    assert choice.artifact.chat_format == "tokenizer" and choice.run_dir == tmp_path
    assert {x.path for x in choice.others} == {recovered, gptq}
    assert artifacts.choose(tmp_path, device="cuda").artifact.path == gptq
    given = artifacts.choose(recovered)  # a folder of a run: served as given, with the run's recorded format
    assert given.artifact.path == recovered and given.artifact.chat_format == "tokenizer" and given.run_dir == tmp_path
    assert artifacts.reference_folder(tmp_path) == recovered and artifacts.reference_folder(gptq) == gptq
    with pytest.raises(FileNotFoundError, match="no such directory"):
        artifacts.choose(tmp_path / "missing")


def test_a_run_without_outputs_says_what_to_do(tmp_path):
    Manifest.load(tmp_path).save()
    with pytest.raises(FileNotFoundError, match="make quantize"):
        artifacts.choose(tmp_path)
    with pytest.raises(FileNotFoundError, match="no recovered model"):
        artifacts.reference_folder(tmp_path)


# ------------------------------------------------------------------------------------------------------ About panel


def report_for(candidate: Path, reference: Path) -> dict:
    def metric(key, label, unit, value):
        return {"key": key, "label": label, "unit": unit, "value": value, "skipped": None}

    reference_metrics = {
        "ppl.wiki": metric("ppl.wiki", "perplexity (wiki)", "ppl", 19.03),
        "mmlu_0shot": metric("mmlu_0shot", "MMLU 0-shot", "points", 30.0),
    }
    return {
        "reference": {"path": str(reference), "metrics": reference_metrics},
        "candidates": [
            {
                "path": str(candidate),
                "passed": True,
                "metrics": {
                    "ppl.wiki": metric("ppl.wiki", "perplexity (wiki)", "ppl", 20.5),
                    "kl_mean": metric("kl_mean", "KL divergence, mean", "nats", 0.0512),
                    "mmlu_0shot": metric("mmlu_0shot", "MMLU 0-shot", "points", 29.5),
                },
                "deltas": {
                    "ppl.wiki": {"delta": 1.47, "delta_pct": 7.72},
                    "mmlu_0shot": {"delta": -0.5, "delta_pct": None},
                },
            }
        ],
    }


def test_about_panel_shows_artifact_settings_and_report(tmp_path, tokenizer):
    gptq, recovered = folder(tmp_path, "gptq", "gptq"), folder(tmp_path, "recovered", "torch")
    report = report_for(gptq, recovered)
    rows, verdict = about.report_rows(report, gptq)
    assert rows == [
        ("perplexity (wiki)", "19.030", "20.500", "+1.47 (+7.72 %)"),
        ("KL divergence, mean", "-", "0.0512", "-"),
        ("MMLU 0-shot", "30.00", "29.50", "-0.5"),
    ]
    assert verdict == "all quality gates passed"
    assert about.report_rows(report, recovered)[0][0] == ("perplexity (wiki)", "19.030", "19.030", "-")
    assert about.report_rows(report, tmp_path / "other") == ([], "the validation report does not cover this artifact")
    engine = Engine(FakeBackend(tokenizer), artifacts.describe_folder(gptq))
    choice = artifacts.Choice(engine.artifact, "CUDA is available: its 4-bit CUDA kernels decode fastest", tmp_path)
    text = about.about_markdown(engine, choice, report)
    assert "### GPTQ 4-bit checkpoint" in text and "- group_size: `128`" in text and "1.21 KiB" in text
    assert "| perplexity (wiki) | 19.030 | 20.500 | +1.47 (+7.72 %) |" in text and "all quality gates passed" in text
    assert "No validation report" in about.about_markdown(engine, choice, None)


def test_report_is_found_through_the_manifest(tmp_path):
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "report.json").write_text(json.dumps({"reference": {}, "candidates": []}))
    run_dir_with(tmp_path, {"validate": report_dir})
    assert about.read_report(tmp_path) == {"reference": {}, "candidates": []}
    assert about.read_report(None) is None


# ------------------------------------------------------------------------------------------------------ config and CLI


def test_demo_config_is_safe_by_default():
    cfg = DemoConfig()
    assert (cfg.host, cfg.port, cfg.share, cfg.concurrency_limit) == ("127.0.0.1", 7860, False, 1)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        build(DemoConfig, {"max_new_tokens": 4096}, "test")
    with pytest.raises(ConfigError, match="unknown key 'shares'"):
        build(DemoConfig, {"shares": True}, "test")


def test_gguf_files_are_artifacts_of_their_own(tmp_path):
    recovered, onnx = folder(tmp_path, "recovered", "torch"), folder(tmp_path, "onnx", "onnx", precision="int4")
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    files = [{"type": "Q8_0", "file": "m-Q8_0.gguf"}, {"type": "Q4_K_M", "file": "m-Q4_K_M.gguf"}]
    for entry, size in zip(files, (2000, 1000)):
        (gguf / entry["file"]).write_bytes(b"\0" * size)
    (gguf / "imatrix.gguf").write_bytes(b"\0" * 10)
    (gguf / "gguf.json").write_text(json.dumps({"files": files}))
    run_dir_with(tmp_path, {"recover": recovered, "export_onnx": onnx, "export_gguf": gguf})
    found = artifacts.run_artifacts(tmp_path)
    assert [(x.kind, x.precision, x.path.name) for x in found[2:]] == [
        ("gguf", "Q8_0", "m-Q8_0.gguf"),
        ("gguf", "Q4_K_M", "m-Q4_K_M.gguf"),
    ]
    assert found[3].label == "GGUF Q4_K_M (llama.cpp)"
    # CPU: the int4 ONNX export, then the smaller GGUF, then the larger, then the full-precision model
    ranked = sorted(found, key=lambda x: artifacts.rank(x, cuda=False, onnx_targets={"cpu"}))
    assert [x.path.name for x in ranked] == ["onnx", "m-Q4_K_M.gguf", "m-Q8_0.gguf", "recovered"]
    best, reason = artifacts.pick([found[0], *found[2:]], cuda=False, onnx_targets={"cpu"})
    assert best.path.name == "m-Q4_K_M.gguf" and "llama.cpp runs the Q4_K_M GGUF" in reason
    given = artifacts.choose(gguf / "m-Q8_0.gguf")  # a file of a run: served as given, with the run's format
    assert given.artifact.precision == "Q8_0" and given.artifact.chat_format == "tokenizer"
    assert artifacts.describe_folder(gguf).path == gguf / "m-Q8_0.gguf"  # a folder: its first type
