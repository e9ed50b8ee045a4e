"""export-onnx on tiny random LLaMAs: requests rejected before work, the graphs each target gets, fp32 logits equal to
torch, int4 quantizer settings reaching the graph, GPTQ weights kept bit for bit, verification failing loudly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import bpe_tokenizer, run_config, save_tiny_hf

from tulu_quant.backends import onnx_backend
from tulu_quant.checkpoint import TOKENIZER_FILES
from tulu_quant.config import ExportOnnxConfig, RunConfig
from tulu_quant.stages import export_onnx
from tulu_quant.stages.export_onnx import ExportError

TEXT = "The quick brown fox jumps over the lazy dog while the old river runs south past the mill and the market. " * 4
STANDIN_WIDTHS = {"hidden_size": 576, "num_attention_heads": 9, "head_dim": 64, "intermediate_size": 1536}


def build_tiny(root: Path, tie: bool = False, seed: int = 0) -> Path:
    """A random 2-layer LLaMA in float16 with a BOS-prefixing byte-level BPE tokenizer trained on the spot."""
    return save_tiny_hf(
        root,
        bpe_tokenizer(TEXT),
        seed=seed,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
        initializer_range=0.1,
    )


def export(model: Path, out: Path, gptq: Path | None = None, **values) -> export_onnx.ExportResult:
    cfg = ExportOnnxConfig.model_validate({"verify_tokens": 64, "verify_new_tokens": 8, "threads": 2, **values})
    return export_onnx.run(
        run_config(export_onnx=cfg, model__chat_format="tulu"),
        model,
        out,
        gptq_dir=gptq,
        force=True,
        log_file=out.parent / f"{out.name}.log",
        verify_text=TEXT,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"))


def quantize_gptq(model_dir: Path, out: Path, **settings) -> Path:
    """A 4-bit group-32 GPTQ checkpoint of model_dir in float16, made with GPTQModel 7.6 on CPU."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    from gptqmodel import GPTQModel, QuantizeConfig
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sample = tokenizer(TEXT)
    calibration = [{"input_ids": sample["input_ids"], "attention_mask": sample["attention_mask"]}] * 8
    model = GPTQModel.load(
        str(model_dir), QuantizeConfig(bits=4, group_size=32, **settings), device="cpu", dtype=torch.float16
    )
    model.quantize(calibration, batch_size=1)
    model.save(str(out))
    return out


@pytest.fixture(scope="module")
def tiny_gptq(tiny, tmp_path_factory) -> Path:
    return quantize_gptq(tiny, tmp_path_factory.mktemp("gptq") / "gptq", sym=False, desc_act=False)


# ------------------------------------------------------------------------------------------------------ pure checks


@pytest.mark.parametrize(
    ("values", "gptq", "message"),
    [
        ({"precision": "fp32", "target": "webgpu"}, False, "fp32 on target webgpu is not supported"),
        ({"precision": "fp16", "target": "cpu"}, False, "for cpu choose one of \\['int4', 'fp32'\\]"),
        ({"precision": "fp32", "target": "dml"}, False, "for dml choose one of \\['int4', 'fp16'\\]"),
        ({"precision": "fp16", "target": "cuda"}, True, "--from-gptq .* needs --precision int4"),
        ({"precision": "fp32", "block_size": 64}, False, "block_size only apply to int4"),
        ({"precision": "fp32", "algorithm": "rtn", "lm_head": "int8"}, False, "algorithm, lm_head only apply to int4"),
        ({"precision": "int4", "algorithm": "k_quant", "symmetric": True}, False, "k_quant always stores a zero point"),
    ],
)
def test_invalid_requests_are_rejected_before_any_work(tiny, tmp_path, monkeypatch, values, gptq, message):
    monkeypatch.setattr(export_onnx, "build_onnx", lambda *a, **k: pytest.fail("the builder must not run"))
    cfg = ExportOnnxConfig.model_validate({"target": "cpu", **values})
    with pytest.raises(ExportError, match=message):
        export_onnx.run(run_config(export_onnx=cfg), tiny, tmp_path / "out", gptq_dir=tiny if gptq else None)
    assert list(tmp_path.iterdir()) == []


def test_an_explicit_block_size_that_gives_an_odd_block_count_is_refused_for_zero_point_packers():
    # the stand-in's widths: 576 / 64 = 9 blocks; onnxruntime's rtn/k_quant packer needs an even count
    fit = export_onnx.fit_block_size
    with pytest.raises(ExportError, match=r"hidden_size .* = 576.*block_size in \[16, 32\]"):
        fit(ExportOnnxConfig(block_size=64, algorithm="k_quant"), STANDIN_WIDTHS, gptq=False)
    with pytest.raises(ExportError, match="odd number of blocks"):
        fit(ExportOnnxConfig(block_size=128, algorithm="rtn", symmetric=False), STANDIN_WIDTHS, False)
    kept = ExportOnnxConfig(block_size=64, algorithm="rtn", symmetric=True)
    assert fit(kept, STANDIN_WIDTHS, False) == kept
    assert fit(ExportOnnxConfig(block_size=32, algorithm="k_quant"), STANDIN_WIDTHS, False).block_size == 32
    # from GPTQ the builder only quantizes the lm_head, and only when it is int4
    assert fit(ExportOnnxConfig(block_size=64, lm_head="int8"), STANDIN_WIDTHS, gptq=True).block_size == 64
    with pytest.raises(ExportError, match=r"hidden_size.*block_size in \[16, 32\]"):
        fit(ExportOnnxConfig(block_size=64, lm_head="int4"), STANDIN_WIDTHS, gptq=True)


@pytest.mark.parametrize(
    ("widths", "settings", "expected"),
    [
        # MLP width 160 = 5 blocks of 32: the only size that fits it and hidden 64 is 16 (10 and 4 blocks)
        ({"intermediate_size": 160}, {}, {"block_size": 16, "algorithm": "k_quant", "symmetric": False}),
        # 64 | 192: 32 gives 2 and 6 blocks, so the default stays
        ({"hidden_size": 64, "intermediate_size": 192}, {}, {"block_size": 32}),
        # 16 wide: one block at any size; only symmetric rtn (no zero points to pack) can store it
        ({"hidden_size": 16, "intermediate_size": 64}, {}, {"block_size": 32, "algorithm": "rtn", "symmetric": True}),
        # the user chose the algorithm: it is kept, so no block size fitting is an error
        ({"hidden_size": 16, "intermediate_size": 64}, {"algorithm": "k_quant"}, "unset algorithm"),
        ({"intermediate_size": 160}, {"block_size": 32}, r"block_size in \[16\]"),
    ],
)
def test_a_default_block_size_that_cannot_be_packed_is_adapted_and_logged(widths, settings, expected, caplog):
    config = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 192} | widths
    cfg = ExportOnnxConfig(**settings)
    if isinstance(expected, str):
        with pytest.raises(ExportError, match=expected):
            export_onnx.fit_block_size(cfg, config, gptq=False)
        return
    fitted = export_onnx.fit_block_size(cfg, config, gptq=False)
    assert {k: getattr(fitted, k) for k in expected} == expected
    assert (fitted == cfg) == (not caplog.records)  # every change is said
    if fitted != cfg:
        assert "odd number of blocks" in caplog.text or "even number of blocks" in caplog.text


def test_builder_options_use_the_0_18_names():
    options = export_onnx.builder_options(
        ExportOnnxConfig(block_size=64, symmetric=False, accuracy_level=1, algorithm="rtn", lm_head="int8")
    )
    assert options == {
        "block_size": "64",
        "is_symmetric": "false",
        "algo_config": "rtn",
        "accuracy_level": "1",
        "matmul_mixed_precision": "last_matmul:int8",
    }
    assert export_onnx.builder_options(ExportOnnxConfig(lm_head="float"))["nodes_to_exclude"] == "/lm_head/MatMul"
    assert export_onnx.builder_options(ExportOnnxConfig())["accuracy_level"] == "4"  # int8 compute on every CPU
    assert "accuracy_level" not in export_onnx.builder_options(ExportOnnxConfig(target="cuda"))  # the builder's own
    assert export_onnx.builder_options(ExportOnnxConfig(precision="fp32")) == {}


def test_the_graph_check_names_what_does_not_fit_the_request():
    int4_cpu = {"ops": {"GroupQueryAttention": 2, "MatMulNBits": 10}, "io_dtype": "float32", "float_weight_matmuls": []}
    assert export_onnx.check_graph(int4_cpu, ExportOnnxConfig(), layers=2) == []
    problems = export_onnx.check_graph(int4_cpu, ExportOnnxConfig(target="cuda"), layers=3)
    assert problems == [
        "2 GroupQueryAttention nodes for 3 layers",
        "logits are float32, expected float16",
        "only 10 MatMulNBits nodes for 3 layers",
    ]
    fp32 = {
        "ops": {"GroupQueryAttention": 2, "MatMul": 12},
        "io_dtype": "float32",
        "float_weight_matmuls": ["/lm_head/MatMul"],
    }
    assert export_onnx.check_graph(fp32, ExportOnnxConfig(precision="fp32"), 2) == []
    assert export_onnx.check_graph(fp32, ExportOnnxConfig(precision="fp32", target="cuda"), 2) == [
        "0 Attention nodes for 2 layers"
    ]
    leftover = {**int4_cpu, "float_weight_matmuls": ["/lm_head/MatMul"]}
    assert export_onnx.check_graph(leftover, ExportOnnxConfig(lm_head="float"), 2) == []
    assert export_onnx.check_graph(leftover, ExportOnnxConfig(lm_head="int8"), 2) == [
        "float MatMuls left: ['/lm_head/MatMul']"
    ]


def test_gptq_checkpoints_other_than_4_bit_v1_are_refused(tmp_path):
    for quant, message in [
        ({"bits": 8, "quant_method": "gptq"}, "8-bit gptq"),
        ({"bits": 4, "quant_method": "gptq", "checkpoint_format": "gptq_v2"}, "format gptq_v2"),
        ({"bits": 4, "quant_method": "awq"}, "4-bit awq"),
    ]:
        (tmp_path / "quantize_config.json").write_text(json.dumps(quant))
        with pytest.raises(ExportError, match=message):
            export_onnx.read_gptq_config(tmp_path)
    (tmp_path / "quantize_config.json").unlink()
    with pytest.raises(ExportError, match="no quantize_config.json"):
        export_onnx.read_gptq_config(tmp_path)


# ------------------------------------------------------------------------------------------------------ exports


def test_fp32_cpu_export_matches_torch_and_runs_with_genai(tiny, tmp_path):
    from tulu_quant.chat import TULU_TEMPLATE, render_tulu

    result = export(tiny, tmp_path / "onnx", precision="fp32")
    out = result.out
    assert {"genai_config.json", "model.onnx", "model.onnx.data", "export.json", "chat_template.jinja"} <= {
        p.name for p in out.iterdir()
    }
    for name in TOKENIZER_FILES:  # the model's own tokenizer, so token ids equal the torch backends'
        if (tiny / name).is_file() and name != "tokenizer_config.json":
            assert (out / name).read_bytes() == (tiny / name).read_bytes(), name
    assert (out / "chat_template.jinja").read_text() == TULU_TEMPLATE
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == TULU_TEMPLATE
    v = result.verification
    assert v["tokens"] == 64 and v["max_rel_diff"] < 1e-5 and v["top1_agreement"] == 100.0
    assert v["generated_tokens"] == 8 and v["greedy_prefix_matching_torch"] == 8 and v["genai_tokenizer_agrees"]
    assert result.graph["io_dtype"] == "float32" and "MatMulNBits" not in result.graph["ops"]
    assert result.graph["ops"]["GroupQueryAttention"] == 2
    record = json.loads((out / "export.json").read_text())
    assert record["onnx_bytes"] == result.onnx_bytes > 2 * 64 * 300 * 4 and record["seconds"] > 0
    assert record["verification"] == json.loads(json.dumps(v)) and record["config"]["precision"] == "fp32"
    # the chat template reaches onnxruntime-genai's own tokenizer too
    import onnxruntime_genai as og

    messages = [{"role": "user", "content": "Hi"}]
    applied = og.Tokenizer(og.Model(str(out))).apply_chat_template(json.dumps(messages), add_generation_prompt=True)
    assert applied == render_tulu(messages, "</s>")
    with pytest.raises(FileExistsError, match="pass --force"):
        export_onnx.run(run_config(export_onnx={"precision": "fp32"}), tiny, out)


def test_int4_quantizer_settings_reach_the_graph(tiny, tmp_path):
    result = export(
        tiny,
        tmp_path / "int4",
        precision="int4",
        block_size=16,
        symmetric=False,
        algorithm="rtn",
        accuracy_level=1,
        lm_head="float",
    )
    graph = result.graph
    assert graph["quantized"] == {"bits": [4], "block_size": [16], "accuracy_level": [1]}
    assert graph["float_weight_matmuls"] == ["/lm_head/MatMul"] and graph["io_dtype"] == "float32"
    assert graph["ops"]["MatMulNBits"] >= 8
    import onnx

    model = onnx.load(str(result.out / "model.onnx"), load_external_data=False)
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert all(len(n.input) >= 4 and n.input[3] for n in nbits)  # asymmetric: a zero-point input on every node
    v = result.verification
    assert 0 <= v["kl_mean"] < 0.5 and v["top1_agreement"] >= 50 and v["generated_tokens"] == 8
    assert v["max_rel_diff"] > 1e-4  # int4 is not fp32: the comparison sees the quantization
    # symmetric RTN writes no zero points; an int8 lm_head is a MatMulNBits of 8 bits
    result = export(tiny, tmp_path / "sym", precision="int4", algorithm="rtn", symmetric=True, lm_head="int8")
    model = onnx.load(str(result.out / "model.onnx"), load_external_data=False)
    nbits = {n.name: n for n in model.graph.node if n.op_type == "MatMulNBits"}
    assert all(len(n.input) == 3 for name, n in nbits.items() if "lm_head" not in name)
    head = {a.name: onnx.helper.get_attribute_value(a) for a in nbits["/lm_head/MatMul_Q8"].attribute}
    assert (
        head["bits"] == 8 and result.graph["quantized"]["bits"] == [4, 8] and result.graph["float_weight_matmuls"] == []
    )


def test_default_int4_export_of_a_model_whose_width_the_default_block_cannot_pack(tmp_path, caplog):
    # MLP width 160 is 5 blocks of 32: with every setting at its default the export picks block_size 16 and says so
    model = save_tiny_hf(tmp_path / "m160", bpe_tokenizer(TEXT), intermediate_size=160, max_position_embeddings=128)
    cfg = ExportOnnxConfig.model_validate({"verify_tokens": 64, "verify_new_tokens": 4, "threads": 2})
    result = export_onnx.run(run_config(export_onnx=cfg), model, tmp_path / "out")
    assert result.graph["quantized"]["block_size"] == [16] and result.builder_options["block_size"] == "16"
    assert "using block_size 16 instead" in caplog.text
    assert result.verification["top1_agreement"] >= 50


def test_failed_verification_leaves_nothing_behind(tiny, tmp_path):
    with pytest.raises(ExportError, match=r"top-1 agreement with the fp16 model is .*floor 100%"):
        export(tiny, tmp_path / "int4", precision="int4", min_top1_agreement=100.0)
    assert not (tmp_path / "int4").exists() and not list(tmp_path.glob(".int4.partial-*"))


@pytest.mark.parametrize(
    ("precision", "target", "attention", "io_dtype"),
    [
        ("int4", "cuda", "GroupQueryAttention", "float16"),
        ("fp16", "cuda", "GroupQueryAttention", "float16"),
        ("fp32", "cuda", "Attention", "float32"),
        ("int4", "dml", "GroupQueryAttention", "float16"),
        ("fp16", "dml", "GroupQueryAttention", "float16"),
        ("int4", "webgpu", "GroupQueryAttention", "float16"),
    ],
)
def test_other_targets_export_on_cpu_with_the_expected_graph(tiny, tmp_path, precision, target, attention, io_dtype):
    import onnxruntime

    provider = onnx_backend.PROVIDERS[target]
    if provider in onnxruntime.get_available_providers():
        pytest.skip(f"{provider} is installed here: the gpu tests run this export")
    result = export(tiny, tmp_path / target, precision=precision, target=target)
    assert result.graph["ops"][attention] == 2 and result.graph["io_dtype"] == io_dtype
    assert ("MatMulNBits" in result.graph["ops"]) == (precision == "int4")
    assert result.verification == {"skipped": f"onnxruntime here has no {provider}"}
    genai = json.loads((result.out / "genai_config.json").read_text())
    providers = genai["model"]["decoder"]["session_options"]["provider_options"]
    assert [next(iter(p)) for p in providers] == [target]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["int4", "fp16", "fp32"])
def test_cuda_exports_run_and_verify_on_cuda(tiny, tmp_path, precision):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and onnxruntime-genai-cuda (the gpu extra) on a CUDA machine")
    result = export(tiny, tmp_path / precision, precision=precision, target="cuda")
    v = result.verification
    assert "skipped" not in v and v["generated_tokens"] == 8
    if precision == "fp32":
        assert v["max_rel_diff"] < 1e-4


# ------------------------------------------------------------------------------------------------------ from GPTQ


def dequantized_gptq(gptq: Path) -> dict[str, np.ndarray]:
    """W[out, in] = (q - (z + 1)) * s per group, from the GPTQ v1 tensors (zeros stored minus one)."""
    from safetensors.torch import load_file

    state, shifts, weights = load_file(str(gptq / "model.safetensors")), torch.arange(0, 32, 4, dtype=torch.int32), {}
    for name in [k[: -len(".qweight")] for k in state if k.endswith(".qweight")]:
        q = ((state[f"{name}.qweight"].unsqueeze(1) >> shifts.view(1, 8, 1)) & 15).flatten(0, 1).float()
        z = ((state[f"{name}.qzeros"].unsqueeze(2) >> shifts.view(1, 1, 8)) & 15).flatten(1, 2).float() + 1
        g = state[f"{name}.g_idx"].long()
        weights[name] = ((q - z[g]) * state[f"{name}.scales"].float()[g]).t().numpy()
    return weights


def onnx_dequantized(model_path: Path) -> dict[str, np.ndarray]:
    """W[N, K] of every MatMulNBits node, from its packed uint4 weights, zero points and scales."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = {}
    for node in (n for n in model.graph.node if n.op_type == "MatMulNBits"):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        packed, scales = inits[node.input[1]], inits[node.input[2]]
        n, blocks, _ = packed.shape
        q = np.stack([packed & 15, packed >> 4], -1).reshape(n, -1).astype(np.float32)
        zeros = np.stack([inits[node.input[3]] & 15, inits[node.input[3]] >> 4], -1).reshape(n, -1)[:, :blocks]
        bs = attrs["block_size"]
        weights[node.name] = ((q - np.repeat(zeros, bs, 1)) * np.repeat(scales.reshape(n, blocks), bs, 1))[
            :, : attrs["K"]
        ]
    return weights


def test_from_gptq_keeps_the_gptq_weights_bit_for_bit(tiny, tiny_gptq, tmp_path):
    result = export(tiny, tmp_path / "gptq-onnx", gptq=tiny_gptq, precision="int4", lm_head="float", accuracy_level=1)
    assert result.source == "gptq" and result.inputs["gptq"] == str(tiny_gptq.resolve())
    gptq, onnx_w = dequantized_gptq(tiny_gptq), onnx_dequantized(result.out / "model.onnx")
    for layer in range(2):
        prefix = f"model.layers.{layer}"
        qkv = np.concatenate([gptq[f"{prefix}.self_attn.{x}_proj"] for x in "qkv"])
        np.testing.assert_array_equal(onnx_w[f"/model/layers.{layer}/attn/qkv_proj/MatMulNBits"], qkv)
        for part in ("gate_proj", "up_proj", "down_proj"):
            np.testing.assert_array_equal(
                onnx_w[f"/model/layers.{layer}/mlp/{part}/MatMulNBits"], gptq[f"{prefix}.mlp.{part}"]
            )
        np.testing.assert_array_equal(
            onnx_w[f"/model/layers.{layer}/attn/o_proj/MatMulNBits"], gptq[f"{prefix}.self_attn.o_proj"]
        )
    assert result.graph["quantized"]["block_size"] == [32]  # GPTQ's group size, not the quantizer setting
    assert result.verification["top1_agreement"] >= 50 and result.verification["generated_tokens"] == 8


def test_from_an_act_order_gptq_checkpoint_the_logits_are_its_dequantized_model(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from tulu_quant.backends.onnx_backend import OnnxBackend

    gptq = quantize_gptq(tiny, tmp_path / "gptq", sym=True, desc_act=True)  # columns in Hessian order: a permuted g_idx
    result = export(
        tiny, tmp_path / "onnx", gptq=gptq, precision="int4", lm_head="float", accuracy_level=1, verify=False
    )
    import onnx

    graph = onnx.load(str(result.out / "model.onnx"), load_external_data=False).graph
    assert all(len(n.input) == 5 and n.input[4].endswith("g_idx") for n in graph.node if n.op_type == "MatMulNBits")
    # a float32 model of the checkpoint: its float tensors and its dequantized (g_idx-grouped) weights
    from safetensors.torch import load_file

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    state, stored = model.state_dict(), load_file(str(gptq / "model.safetensors"))
    g_idx = stored["model.layers.0.mlp.down_proj.g_idx"]
    assert not torch.equal(g_idx, torch.arange(128, dtype=g_idx.dtype) // 32)
    state.update({k: v.float() for k, v in stored.items() if k in state})
    state.update({f"{name}.weight": torch.from_numpy(w) for name, w in dequantized_gptq(gptq).items()})
    model.load_state_dict(state)
    ids = OnnxBackend(result.out).tokenizer(TEXT).input_ids[:64]
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    got = OnnxBackend(result.out).logits(ids)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5


def test_from_gptq_refuses_a_checkpoint_of_another_model(tiny_gptq, tmp_path):
    other = build_tiny(tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["intermediate_size"] = 96
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=r"not quantized from .*intermediate_size \(96 vs 128\)"):
        export_onnx.run(run_config(), other, tmp_path / "out", gptq_dir=tiny_gptq)


# ------------------------------------------------------------------------------------------------------ pipeline, CLI


def test_pipeline_step_reads_recover_and_quantize_outputs_from_the_manifest(tiny, tiny_gptq, tmp_path):
    from tulu_quant.manifest import Manifest
    from tulu_quant.stages.base import Context

    run_dir = tmp_path / "run"
    manifest = Manifest.load(run_dir)
    manifest.stages = {
        "recover": {"status": "done", "output_dirs": [str(tiny)]},
        "quantize": {"status": "done", "output_dirs": [str(tiny_gptq)]},
    }
    cfg = RunConfig.model_validate(
        {
            "model": {"name": "tiny", "base": "b", "diff": "d", "chat_format": "tokenizer"},
            "run_dir": str(run_dir),
            "stages": ["recover", "quantize", "export_onnx"],
            "export_onnx": {"verify": False, "lm_head": "float"},
        }
    )
    step = export_onnx.step(cfg, Context(run_dir, manifest))
    assert step.inputs == [tiny, tiny_gptq] and step.outputs == [run_dir / "onnx"]
    assert step.config["from_gptq"] is True and step.config["chat_format"] == "tokenizer"
    summary = step.run()
    assert summary["source"] == "gptq" and summary["verification"] == {"skipped": "verify is off"}
    assert (run_dir / "onnx" / "genai_config.json").is_file() and "fp16" not in step.describe(summary)
    manifest.stages.pop("quantize")
    with pytest.raises(RuntimeError, match="needs the quantize stage's output"):
        export_onnx.step(cfg, Context(run_dir, manifest))
