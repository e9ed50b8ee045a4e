"""quantize: GPTQ through GPTQModel on a tiny random LLaMA, end to end on CPU, and the settings it must refuse early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import bpe_tokenizer, run_config, save_tiny_hf
from tiny import write_calibration as tiny_calibration

from tulu_quant.checkpoint import read_safetensors_header
from tulu_quant.config import ConfigError, QuantizeConfig, build, load_config, load_variant
from tulu_quant.hardware import cpu_compute_dtype
from tulu_quant.stages import quantize
from tulu_quant.stages.calibrate import RECORD_FILE

VOCAB = 300
WIDTHS = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}
STANDIN_WIDTHS = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3}
FAST = {"offload_to_disk": False, "device": "cpu"}  # offload costs seconds per module on a tiny model


def build_tiny(root: Path, seed: int = 0) -> Path:
    """A 2-layer LLaMA (hidden 64, intermediate 128) in float16 with a byte-level BPE tokenizer of 300 tokens."""
    tokenizer = bpe_tokenizer(
        "The quick brown fox jumps over the lazy dog. Calibration text for GPTQ.",
        specials=("<s>", "</s>", "<unk>"),
        repeat=50,
        bos_prefix=False,
    )
    return save_tiny_hf(root, tokenizer, seed=seed, vocab_size=VOCAB, max_position_embeddings=256, **WIDTHS)


def write_calibration(model_dir: Path, out: Path, n: int = 16, length: int = 64, seed: int = 0) -> Path:
    return tiny_calibration(model_dir, out, n, length, seed, vocab=VOCAB)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def calib(tiny, tmp_path_factory) -> Path:
    return write_calibration(tiny, tmp_path_factory.mktemp("calib"))


def logits(model_dir: Path, ids: torch.Tensor, **kwargs) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs).eval()
    with torch.no_grad():
        return model(ids).logits.float()


def quantize_run(model, calib, out, cfg, chat_format="tulu", **kw):
    """quantize.run with cfg as the quantize: section."""
    return quantize.run(run_config(quantize=cfg, model__chat_format=chat_format), model, out, calib, **kw)


def relative_error(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    return float((candidate - reference).norm() / reference.norm())


@pytest.fixture(scope="module")
def quantized(tiny, calib, tmp_path_factory) -> dict[int, Path]:
    """The tiny model at 4 and 8 bits (group 32, asymmetric)."""
    outs = {}
    for bits in (4, 8):
        out = tmp_path_factory.mktemp(f"q{bits}") / "gptq"
        cfg = QuantizeConfig(bits=bits, group_size=32, sym=False, **FAST)
        result = quantize_run(tiny, calib, out, cfg, log_file=out.parent / "gptq.log")
        assert result.out == out and result.layers == 2 and result.bytes > 0
        outs[bits] = out
    return outs


def test_checkpoint_is_standard_gptq_v1(quantized, tiny):
    out = quantized[4]
    config = json.loads((out / "config.json").read_text())
    block = config["quantization_config"]
    assert (block["bits"], block["group_size"], block["sym"], block["desc_act"]) == (4, 32, False, False)
    assert block["quant_method"] == "gptq" and block["checkpoint_format"] == "gptq"
    assert "offload_to_disk_path" not in block["meta"]
    assert json.loads((out / "quantize_config.json").read_text())["bits"] == 4
    assert config["dtype"] == "float16" and config["vocab_size"] == VOCAB
    tensors = {}
    for path in out.glob("*.safetensors"):
        tensors.update(read_safetensors_header(path))
    assert {"qweight", "qzeros", "scales", "g_idx"} <= {n.rsplit(".", 1)[1] for n in tensors if ".mlp.down_proj." in n}
    floats = {n: t.dtype for n, t in tensors.items() if t.dtype.is_floating_point}
    assert floats and set(floats.values()) == {torch.float16}, floats  # any forward dtype: a float16 checkpoint
    assert tensors["model.layers.0.mlp.down_proj.qweight"].shape == (128 * 4 // 32, 64)  # in * bits / 32 rows
    assert "<|assistant|>" in json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    record = json.loads((out / quantize.RECORD_FILE).read_text())
    assert record["config"]["bits"] == 4 and record["peak_rss"] > 0
    assert record["compute_dtype"] == cpu_compute_dtype()[0]  # what this CPU computes fast
    from safetensors.torch import load_file

    saved, source = load_file(next(out.glob("*.safetensors"))), load_file(tiny / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert torch.equal(saved[name], source[name]), name  # exact, not rounded through the bfloat16 forward


def test_transformers_reloads_close_to_the_fp16_model_and_generates(quantized, tiny):
    from transformers import AutoModelForCausalLM

    ids = torch.randint(3, VOCAB, (2, 48), generator=torch.Generator().manual_seed(1))
    reference = logits(tiny, ids, dtype=torch.float32)
    errors = {bits: relative_error(logits(out, ids), reference) for bits, out in quantized.items()}
    # Round-to-nearest with 2^b levels over a group of Gaussian weights errs by ~ (range / (2^b - 1)) / sqrt(12): ~8 %
    # of the weights' scale at 4 bits (range ~4 sigma over 32 values), ~0.5 % at 8 bits. The logits inherit about that
    # (the residual stream and embeddings are not quantized) plus bfloat16 compute (~0.4 %): bounds at twice that.
    assert errors[4] < 0.15, errors
    assert errors[8] < 0.02, errors
    assert errors[8] < errors[4] / 4, errors  # the bit width really reached the checkpoint
    model = AutoModelForCausalLM.from_pretrained(quantized[4]).eval()
    generated = model.generate(ids[:1, :8], max_new_tokens=6, do_sample=False)
    assert generated.shape == (1, 14)


def test_three_bit_quantizes_and_reloads_leaving_nothing_in_the_working_directory(tiny, calib, tmp_path, monkeypatch):
    out, cwd = tmp_path / "gptq3", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # GPTQModel on its own writes per-module records to ./logs/
    quantize_run(tiny, calib, out, QuantizeConfig(bits=3, group_size=64, **FAST), log_file=tmp_path / "q.log")
    assert not list(cwd.iterdir())
    assert not list(out.parent.glob(".gptq3.*"))  # the temporary folder, records included, is gone
    ids = torch.randint(3, VOCAB, (1, 32), generator=torch.Generator().manual_seed(2))
    error = relative_error(logits(out, ids), logits(tiny, ids, dtype=torch.float32))
    assert error < 0.35, error  # 3 bits: twice the 4-bit step, so about twice the 4-bit bound


def test_without_a_calibration_folder_one_is_built_beside_the_output_fitting_the_context(tiny, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 400)
    cfg = run_config(  # seq_len left at its default (2048): clamped to the model's 256 positions
        quantize=QuantizeConfig(group_size=32, **FAST),
        calibrate={"mix": [{"source": f"file:{text}"}], "num_samples": 4, "evaluation": []},
        model__chat_format="tulu",
    )
    result = quantize.run(cfg, tiny, tmp_path / "gptq", log_file=tmp_path / "q.log")
    calib = json.loads((tmp_path / "gptq.calib" / RECORD_FILE).read_text())
    assert (calib["num_samples"], calib["seq_len"]) == (4, 256) and result.layers == 2
    assert json.loads((tmp_path / "gptq" / quantize.RECORD_FILE).read_text())["calibration"]["seq_len"] == 256


def test_existing_output_needs_force(quantized, tiny, calib):
    with pytest.raises(FileExistsError, match="--force"):
        quantize_run(tiny, calib, quantized[4], QuantizeConfig(**FAST))


# ------------------------------------------------------------------------------------------------------ refused early


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"group_size": 100}, "must be one of"),
        ({"desc_act": True, "act_group_aware": True}, "exclude each other"),
        ({"group_size": -1, "act_group_aware": True}, "act_group_aware reorders groups"),
        ({"bits": 5}, "bits"),
        ({"damp_percent": 0}, "damp_percent"),
        ({"blocksize": 128}, "unknown key"),
    ],
)
def test_invalid_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        build(QuantizeConfig, settings, "test")


def test_group_size_must_divide_every_input_width():
    cfg = QuantizeConfig(variant="gptq-4bit-128g", **load_variant("gptq-4bit-128g"))
    with pytest.raises(
        quantize.QuantizeError,
        match=r"variant 'gptq-4bit-128g': group_size 128 does not divide the "
        r"input width 576 of self_attn.q_proj.*e.g. 64",
    ):
        quantize.check_settings(cfg, STANDIN_WIDTHS)
    quantize.check_settings(cfg.model_copy(update={"group_size": 64}), STANDIN_WIDTHS)
    quantize.check_settings(cfg.model_copy(update={"group_size": -1, "act_group_aware": False}), STANDIN_WIDTHS)


def test_widths_must_fill_packing_words():
    widths = {**WIDTHS, "hidden_size": 80, "num_attention_heads": 5, "num_key_value_heads": 5}
    with pytest.raises(quantize.QuantizeError, match="input width 80 .* multiple of 32"):
        quantize.check_settings(QuantizeConfig(group_size=16), widths)


def test_non_llama_config_is_refused():
    with pytest.raises(quantize.QuantizeError, match="lacks intermediate_size"):
        quantize.check_settings(QuantizeConfig(), {"hidden_size": 64, "num_attention_heads": 4})


def test_cuda_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(quantize.QuantizeError, match="no CUDA device"):
        quantize.resolve_device("cuda")
    assert quantize.resolve_device("auto") == "cpu"


def test_invalid_group_fails_before_any_work(tiny, calib, tmp_path):
    out = tmp_path / "gptq"
    with pytest.raises(quantize.QuantizeError, match="does not divide"):
        quantize_run(tiny, calib, out, QuantizeConfig(group_size=256, **FAST))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_calibration_from_another_tokenizer_is_refused(tiny, tmp_path):
    other = build_tiny(tmp_path / "other", seed=1)
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text().replace('"<unk>"', '"<oov>"'))
    calib = write_calibration(other, tmp_path / "calib")
    with pytest.raises(quantize.QuantizeError, match="another tokenizer"):
        quantize_run(tiny, calib, tmp_path / "gptq", QuantizeConfig(group_size=32, **FAST))


def test_compute_dtype_auto_follows_the_cpu(monkeypatch):
    from tulu_quant import hardware

    def cpu(flags):
        return hardware.CpuInfo("Test CPU", "x86_64", 2, "AVX2", frozenset(flags))

    monkeypatch.setattr(hardware, "cpu_info", lambda: cpu({"avx2", "fma"}))
    dtype, why = quantize.resolve_dtype("auto", "cpu", {"dtype": "float16"})
    assert dtype == "float32" and "no native BF16" in why
    monkeypatch.setattr(hardware, "cpu_info", lambda: cpu({"avx2", "avx512f", "avx512_bf16"}))
    assert quantize.resolve_dtype("auto", "cpu", {"dtype": "float16"})[0] == "bfloat16"
    assert quantize.resolve_dtype("auto", "cuda", {"dtype": "bfloat16"})[0] == "bfloat16"
    assert quantize.resolve_dtype("auto", "cuda", {"dtype": "float32"})[0] == "float16"
    assert quantize.resolve_dtype("float16", "cpu", {}) == ("float16", "set by quantize.compute_dtype")


def test_record_and_summary_say_which_dtype_and_why(quantized):
    record = json.loads((quantized[4] / quantize.RECORD_FILE).read_text())
    assert record["compute_dtype"] in ("float32", "bfloat16") and record["compute_dtype_reason"]
    assert record["cpu"]["torch_capability"] and record["cpu"]["name"]


# ------------------------------------------------------------------------------------------------------ variants


VARIANTS = sorted(p.stem for p in (Path(__file__).resolve().parents[3] / "configs" / "variants").glob("*.yaml"))


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_files_are_valid(name):
    cfg = build(QuantizeConfig, load_variant(name), name)
    llama13b = {"hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40}
    quantize.check_settings(cfg, llama13b)  # every published variant applies to Tulu 13B


def test_published_variants_are_present_with_thebloke_main_settings():
    assert {
        "gptq-4bit-128g",
        "gptq-4bit-32g-actorder",
        "gptq-4bit-128g-actorder",
        "gptq-3bit-128g",
        "gptq-8bit-128g",
    } <= set(VARIANTS)
    main = build(QuantizeConfig, load_variant("gptq-4bit-128g"), "main")
    assert (main.bits, main.group_size, main.damp_percent, main.desc_act, main.sym, main.true_sequential) == (
        4,
        128,
        0.01,
        False,
        True,
        True,
    )


def test_variant_selected_by_name_layers_under_the_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {name: t, base: /b, diff: /d}\nrun_dir: /r\nquantize: {damp_percent: 0.02}\n")
    cfg = load_config(path, {"quantize.variant": "gptq-4bit-32g-actorder"})
    assert (cfg.quantize.variant, cfg.quantize.group_size, cfg.quantize.desc_act) == (
        "gptq-4bit-32g-actorder",
        32,
        True,
    )
    assert cfg.quantize.damp_percent == QuantizeConfig.model_fields["damp_percent"].default  # a CLI variant replaces


def test_group_aware_reordering_defaults_on_unless_act_order():
    assert QuantizeConfig().group_aware
    assert not QuantizeConfig(desc_act=True).group_aware
    assert not QuantizeConfig(group_size=-1).group_aware
    assert not QuantizeConfig(act_group_aware=False).group_aware


def test_variants_vllm_will_not_serve_are_named_at_quantize_time():
    from tulu_quant.config import QuantizeConfig
    from tulu_quant.stages.quantize import vllm_warnings

    assert vllm_warnings(QuantizeConfig(bits=4, group_size=128, sym=True)) == []
    (asym,) = vllm_warnings(QuantizeConfig(bits=4, group_size=64, sym=False))
    assert asym.startswith("this variant will not load in vLLM: ") and "sym: true" in asym
    (eight,) = vllm_warnings(QuantizeConfig(bits=8, group_size=128))
    assert "on CPUs" in eight and "not 8" in eight  # CUDA serves 8-bit; vLLM's CPU build does not
    assert "desc_act" in vllm_warnings(QuantizeConfig(bits=4, group_size=128, desc_act=True))[0]


def test_autoround_torch_compile_is_passed_only_when_set():
    """None leaves torch.compile to AutoRound; true or false is passed as its enable_torch_compile."""
    assert quantize.autoround_options(QuantizeConfig(method="autoround")) == {}
    for value in (False, True):
        options = quantize.autoround_options(QuantizeConfig(method="autoround", autoround_torch_compile=value))
        assert options == {"enable_torch_compile": value}
    with pytest.raises(ValueError, match="autoround_torch_compile is an AutoRound setting and method is gptq"):
        QuantizeConfig(method="gptq", autoround_torch_compile=False)


def test_autoround_writes_the_same_gptq_v1_layout_and_reloads_close(tiny, calib, tmp_path, monkeypatch):
    """method: autoround (2 tuning steps per layer on the tiny model): the checkpoint GPTQ tools read, per-layer losses
    in quant_log.csv, and transformers' reload as close to fp16 as GPTQ's own. autoround_torch_compile reaches
    AutoRound's constructor."""
    auto_round = pytest.importorskip("auto_round", reason="AutoRound is part of make install (the autoround extra)")
    made = []
    real = auto_round.AutoRound

    def recording(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(auto_round, "AutoRound", recording)
    cfg = QuantizeConfig(
        method="autoround",
        autoround_iters=2,
        autoround_torch_compile=False,
        bits=4,
        group_size=32,
        sym=True,
        batch_size=4,
        **FAST,
    )
    out = tmp_path / "gptq"
    result = quantize_run(tiny, calib, out, cfg, log_file=tmp_path / "log")
    assert [kwargs["enable_torch_compile"] for kwargs in made] == [False]
    quant = json.loads((out / "quantize_config.json").read_text())
    assert (quant["quant_method"], quant["bits"], quant["group_size"], quant["sym"]) == ("gptq", 4, 32, True)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "gptq"
    header = read_safetensors_header(out / "model.safetensors")
    qweight = header["model.layers.0.mlp.down_proj.qweight"]
    assert qweight.shape == (WIDTHS["intermediate_size"] // 8, WIDTHS["hidden_size"])
    assert header["model.embed_tokens.weight"].dtype == torch.float16
    assert result.layers == 2 and result.mean_loss is not None and len((out / "quant_log.csv").read_text().split()) == 3
    assert json.loads((out / quantize.RECORD_FILE).read_text())["config"]["method"] == "autoround"
    ids = torch.randint(3, VOCAB, (1, 24))
    error = relative_error(logits(out, ids, device_map="cpu"), logits(tiny, ids, dtype=torch.float32))
    assert error < 0.3, error


def test_gptq_only_settings_are_refused_for_autoround():
    with pytest.raises(ValueError, match="mse is a GPTQ setting and method is autoround"):
        QuantizeConfig(method="autoround", mse=2.4)
