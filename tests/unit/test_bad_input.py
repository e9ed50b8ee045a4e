"""Every command against the bad inputs a user actually gives it: a missing or empty folder, a config.json that is not
JSON, a truncated weight shard, another architecture, an unknown or bad setting, an --out that cannot be written or
already exists, a disk that fills up mid-write. Each must print one sentence, exit 2 and leave nothing that looks
finished (an existing --out untouched).

The commands run in this process (cli.main), on tiny random LLaMAs. A full disk is simulated with RLIMIT_FSIZE: the
kernel then fails every write past the limit with EFBIG, as a full disk fails it with ENOSPC, for Python and native
writers alike; the log goes to /dev/null, which the limit does not cover.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import resource
import shutil
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tiny import SENTENCES, save_tiny_sentencepiece, tiny_llama_config, tiny_state, write_calibration, write_checkpoint

from tulu_quant import cli

DISK_BYTES = 256  # what the "disk" takes before it is full: less than any file a command writes (a calibration
# set of 2 x 16 tokens and a model card are small; a published checkpoint is hard links, which take no room)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """The good inputs (a model, a base + diff pair, calibration rows, a GPTQ checkpoint, a tiny suite) and bad ones."""
    import torch
    from tiny import run_config

    from tulu_quant.config import QuantizeConfig
    from tulu_quant.stages import quantize

    root = tmp_path_factory.mktemp("inputs")
    model = save_tiny_sentencepiece(root / "model")
    calib = write_calibration(model, root / "calib", n=4, length=32, vocab=320)
    base_cfg, diff_cfg = tiny_llama_config(vocab_size=96), tiny_llama_config(vocab_size=97)
    base = write_checkpoint(root / "base", tiny_state(base_cfg, torch.float16, seed=1), base_cfg)
    diff_state = {k: v * 0.01 for k, v in tiny_state(diff_cfg, torch.float32, seed=2).items()}
    diff = write_checkpoint(root / "diff", diff_state, diff_cfg)
    (diff / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
    settings = QuantizeConfig(group_size=64, offload_to_disk=False, device="cpu")
    gptq = quantize.run(run_config(quantize=settings, model__chat_format="tulu"), model, root / "gptq", calib).out
    text = root / "text.txt"
    text.write_text(SENTENCES * 20)
    suite = root / "suite.yaml"
    off = {name: {"enabled": False} for name in ("mmlu", "codex", "gsm", "bbh", "tydiqa", "alpaca")}
    suite.write_text(yaml.safe_dump({"perplexity": {"sources": [f"file:{text}"], "max_windows": 2}, **off}))

    bad = {"missing": root / "no-such-folder", "empty": root / "empty"}
    bad["empty"].mkdir()
    for name, good in (("model", model), ("base", base)):
        for kind in ("bad-json", "truncated", "other-arch"):
            copy = root / f"{name}-{kind}"
            shutil.copytree(good, copy)
            config = copy / "config.json"
            if kind == "bad-json":
                config.write_text('{"architectures": ["LlamaForCausalLM"], "hidden_size": ')
            elif kind == "truncated":
                shard = next(copy.glob("*.safetensors"))
                shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
            else:
                data = json.loads(config.read_text())
                config.write_text(json.dumps({**data, "architectures": ["BertForMaskedLM"], "model_type": "bert"}))
            bad[f"{name}-{kind}"] = copy
    afile = root / "a-file"
    afile.write_text("not a folder")
    bad_yaml = root / "bad.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    garbage = root / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\x00" * 60)
    return {
        "root": root,
        "model": model,
        "calib": calib,
        "base": base,
        "diff": diff,
        "gptq": gptq,
        "text": text,
        "suite": suite,
        "a-file": afile,
        "bad-yaml": bad_yaml,
        "garbage-gguf": garbage,
        **{f"bad:{k}": v for k, v in bad.items()},
    }


# Each command: its arguments with {model} (the folder the model cases replace), {out} and inputs from `world`;
# "model" is the good folder {model} stands for. Settings keep the real work small.
COMMANDS = {
    "recover": ("base", "recover --base {model} --diff {diff} --out {out}"),
    "calibrate": ("model", "calibrate --model {model} --out {out} --source file:{text} --samples 2 --seq-len 16"),
    "quantize": (
        "model",
        "quantize --model {model} --calib {calib} --out {out} --group-size 64 --device cpu "
        "--set quantize.offload_to_disk=false",
    ),
    "export-onnx": (
        "model",
        "export-onnx --model {model} --out {out} --set export_onnx.verify_tokens=32 "
        "--set export_onnx.verify_new_tokens=2",
    ),
    "export-gguf": ("model", "export-gguf --model {model} --calib {calib} --out {out} --type Q8_0 --no-verify"),
    "validate": (
        "model",
        "validate --reference {model} --candidate {model} --report {out} --suite {suite} --context-length 32 "
        "--device cpu --chat-format tulu",
    ),
    "publish": ("gptq", "publish --model {model} --out {out}"),
    "standin": (None, "standin --out {out}"),
    "generate": ("model", "generate --model {model} --prompt hello --max-new-tokens 2 --device cpu"),
    "plan": ("model", "plan --model {model}"),
    "demo": ("model", "demo --model {model}"),
    "run": ("base", "run --config {config}"),
    "sweep": ("base", "sweep --config {config} --no-speed"),
}
MODEL_CASES = ["missing", "empty", "bad-json", "truncated", "other-arch"]
OUTPUT_CASES = ["out-unwritable", "out-exists", "disk-full"]
# A known key of each command's section (for a bad value), and that bad value.
BAD_VALUES = {
    "recover": "recover.dtype=float7",
    "calibrate": "calibrate.num_samples=-3",
    "quantize": "quantize.bits=5",
    "export-onnx": "export_onnx.accuracy_level=9",
    "export-gguf": "export_gguf.types=[Q9_Z]",
    "validate": "validate.context_length=zero",
    "publish": "publish.repo_id=not a repo",
    "standin": "standin.delta_scale=-1",
    "generate": "generate.temperature=-1",
    "plan": "plan.batch=0",
    "demo": "demo.port=70000",
    "run": "quantize.group_size=48",
    "sweep": "calibrate.seq_len=0",
}


@dataclass(frozen=True)
class Case:
    command: str
    kind: str

    def __str__(self) -> str:
        return f"{self.command}:{self.kind}"


def cases_of(command: str) -> list[Case]:
    """At least ten per command: the model cases where it reads a model folder (plan reads no weights, so a truncated
    shard is no fault there), the output cases where it writes one, the settings and config-file cases always, and
    command-specific ones to fill up."""
    model, _ = COMMANDS[command]
    kinds = ["unknown-set-key", "bad-value", "missing-config", "bad-yaml"]
    if model is not None:
        kinds += [k for k in MODEL_CASES if not (command == "plan" and k == "truncated")]
    if command not in ("generate", "plan", "demo", "run", "sweep"):
        kinds += OUTPUT_CASES
    if command in ("run", "sweep"):
        kinds += ["unknown-yaml-key", "out-unwritable"] + (["disk-full"] if command == "run" else ["unknown-variant"])
    extra = {
        "standin": ["zero-shards", "no-added-tokens", "bad-seed"],
        "generate": ["garbage-gguf", "empty-prompt"],
        "plan": ["unknown-size", "no-widths"],
        "demo": ["compare-missing", "compare-bad-json"],
        "validate": ["candidate-missing"],
        "recover": ["diff-missing"],
    }
    return [Case(command, k) for k in kinds + extra.get(command, [])]


# Cases that still fail (a traceback, exit 0, or a finished-looking output), each with what goes wrong; strict, so a
# fix turns its entry into a failure until it is removed here.
KNOWN_GAPS = {}
CASES = [
    pytest.param(case, marks=pytest.mark.xfail(reason=KNOWN_GAPS[str(case)], strict=True))
    if str(case) in KNOWN_GAPS
    else case
    for command in COMMANDS
    for case in cases_of(command)
]


def test_every_command_is_fed_at_least_ten_bad_inputs():
    counts = {command: len(cases_of(command)) for command in COMMANDS}
    assert set(KNOWN_GAPS) <= {str(case) for command in COMMANDS for case in cases_of(command)}
    assert min(counts.values()) >= 10, counts
    assert set(COMMANDS) == set(cli.COMMANDS)


@contextlib.contextmanager
def disk_of(size: int):
    """Writes to regular files fail past `size` bytes (EFBIG), as on a full disk, until the block ends.

    The terminal is not a regular file, but pytest's capture of it is: so while the disk is full, fds 1 and 2 (and
    sys.stdout/sys.stderr) go into a pipe, which the limit does not cover, and what came through is written to the
    capture once the disk has room again."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    read, write = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read, 65536), b"")), daemon=True)
    reader.start()
    sys.stdout.flush(), sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    streams = sys.stdout, sys.stderr
    for fd in saved:
        os.dup2(write, fd)
    sys.stdout = sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(write), "wb"), write_through=True)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
        sys.stdout.close()
        sys.stdout, sys.stderr = streams
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(write)
        reader.join(timeout=10)  # a copy of the pipe left open somewhere must not hang the test
        sys.stderr.write(b"".join(chunks).decode(errors="replace"))
        sys.stderr.flush()


def arguments(case: Case, world: dict[str, Path], tmp: Path) -> tuple[list[str], Path]:
    """(argv, the output path the command must not leave looking finished)."""
    model_key, template = COMMANDS[case.command]
    model = world[model_key] if model_key else None
    if case.kind in MODEL_CASES:
        prefix = "base" if model_key == "base" else "model"
        model = world[f"bad:{case.kind}"] if case.kind in ("missing", "empty") else world[f"bad:{prefix}-{case.kind}"]
    out = tmp / "out"
    if case.kind == "out-unwritable":
        out = world["a-file"] / "out"
    values = {k: str(v) for k, v in world.items()} | {"model": str(model), "out": str(out)}
    if case.command in ("run", "sweep"):
        config = {
            "model": {"name": "tiny", "base": str(model), "diff": str(world["diff"]), "chat_format": "tulu"},
            "run_dir": str(out),
            "stages": ["recover"],
        }
        if case.command == "sweep":
            config.update(stages=["recover", "calibrate", "quantize"], sweep=["gptq-4bit-128g"])
        if case.kind == "unknown-yaml-key":
            config["quantize"] = {"bitz": 4}
        (tmp / "run.yaml").write_text(yaml.safe_dump(config))
        values["config"] = str(tmp / "run.yaml")
    argv = ["-q", "--log-file", "/dev/null", *template.format(**values).split()]
    if case.command == "generate" and case.kind == "garbage-gguf":
        argv[argv.index("--model") + 1] = values["garbage-gguf"]
    extra = {
        "unknown-set-key": ["--set", f"{section_of(case.command)}.no_such_key=1"],
        "bad-value": ["--set", BAD_VALUES[case.command]],
        "missing-config": ["--config", str(tmp / "no-such.yaml")],
        "bad-yaml": ["--config", values["bad-yaml"]],
        "zero-shards": ["--set", "standin.diff_shards=0"],
        "no-added-tokens": ["--set", "standin.added_tokens=[]"],
        "bad-seed": ["--set", "standin.seed=abc"],
        "unknown-variant": ["--variants", "no-such-variant"],
        "compare-missing": ["--compare", str(tmp / "nothing")],
        "compare-bad-json": ["--compare", values["bad:model-bad-json"]],
        "candidate-missing": ["--candidate", str(tmp / "nothing")],
        "diff-missing": ["--diff", str(tmp / "nothing")],
        "no-widths": [],
    }.get(case.kind, [])
    if case.kind in ("missing-config", "bad-yaml") and case.command in ("run", "sweep"):
        argv[argv.index("--config") + 1] = extra[1]
        extra = []
    if case.kind == "empty-prompt":
        argv[argv.index("--prompt") + 1] = ""
    if case.kind == "unknown-size":
        argv[argv.index("--model") + 1] = "14B"
    if case.kind == "no-widths":
        folder = tmp / "no-widths"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
        argv[argv.index("--model") + 1] = str(folder)
    return argv + extra, out


def section_of(command: str) -> str:
    return {"export-onnx": "export_onnx", "export-gguf": "export_gguf", "run": "quantize", "sweep": "quantize"}.get(
        command, command
    )


def snapshot(path: Path) -> dict[str, int]:
    if path.is_file():
        return {path.name: path.stat().st_size}
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*")} if path.exists() else {}


@pytest.fixture
def quiet_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TULU_QUANT_CACHE", str(tmp_path / "cache"))
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = saved, level


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_one_sentence_exit_2_and_nothing_finished_looking(case, world, tmp_path, capfd, quiet_root):
    import gradio

    tmp = tmp_path / "case"
    tmp.mkdir()
    argv, out = arguments(case, world, tmp)
    if case.kind == "out-exists":  # standin's --out is the parent of the base/ and diff/ folders it writes
        owned = out / "base" if case.command == "standin" else out
        owned.mkdir(parents=True)
        (owned / "mine.txt").write_text("the user's file")
    before = snapshot(out)
    # the demo must fail while loading; should a case load fine, it must not start serving
    launch = pytest.MonkeyPatch.context()
    with launch as patch:
        patch.setattr(gradio.Blocks, "launch", lambda *a, **k: pytest.fail("the demo launched"))
        with disk_of(DISK_BYTES) if case.kind == "disk-full" else contextlib.nullcontext():
            code = cli.main(argv)
    captured = capfd.readouterr()
    text = captured.err + captured.out
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert code == 2, text
    assert "Traceback" not in text and len(errors) == 1, text
    assert text.strip().splitlines()[-1] == errors[0], text
    if case.kind == "out-exists":
        assert snapshot(out) == before  # the user's folder untouched
    elif case.command in ("run", "sweep"):  # the run directory may exist; no stage output, no stage marked done
        files = [name for name in snapshot(out) if (out / name).is_file() and not name.startswith("logs")]
        assert set(files) <= {"manifest.json"}, files
        if files:
            stages = json.loads((out / "manifest.json").read_text()).get("stages", {})
            assert not [name for name, entry in stages.items() if entry.get("status") == "done"], stages
    elif case.kind != "out-unwritable":
        assert not out.exists(), snapshot(out)
    leftovers = [p.name for p in out.parent.glob(f".{out.name}.*") if not p.name.endswith(".work")]
    assert not leftovers, leftovers
