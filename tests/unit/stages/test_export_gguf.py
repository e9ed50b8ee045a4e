"""export-gguf on a tiny random LLaMA with a LLaMA-1-style SentencePiece tokenizer: llama.cpp's converter and quantizer
end to end, the importance matrix against a direct computation, metadata inside the files, widths that do not fit a
type's blocks, and bad input refused before any work with nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import SENTENCES, run_config, save_tiny_sentencepiece, write_calibration

from tulu_quant.backends.gguf_backend import read_metadata
from tulu_quant.config import ConfigError, ExportGgufConfig, GgufType, load_config
from tulu_quant.errors import MissingLibrary, PathExists
from tulu_quant.stages import export_gguf
from tulu_quant.stages.export_gguf import GgufError

TEXT = SENTENCES * 4
STANDIN_WIDTHS = {"hidden_size": 576, "num_attention_heads": 9, "head_dim": 64, "intermediate_size": 1536}
TULU_WIDTHS = {"hidden_size": 5120, "num_attention_heads": 40, "intermediate_size": 13824}


def export(model: Path, out: Path, calib: Path | None, **values) -> export_gguf.GgufResult:
    cfg = ExportGgufConfig.model_validate({"verify_tokens": 64, "verify_new_tokens": 8, "threads": 2, **values})
    return export_gguf.run(
        run_config(export_gguf=cfg, model__name="tiny", model__license="apache-2.0", model__chat_format="tulu"),
        model,
        out,
        calib,
        force=True,
        log_file=out.parent / f"{out.name}.log",
        verify_text=TEXT,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_sentencepiece(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def calib(tiny, tmp_path_factory) -> Path:
    return write_calibration(tiny, tmp_path_factory.mktemp("calib") / "calib", n=6, length=48, vocab=320)


@pytest.fixture(scope="module")
def exported(tiny, calib, tmp_path_factory) -> export_gguf.GgufResult:
    return export(tiny, tmp_path_factory.mktemp("gguf") / "gguf", calib, types=["Q4_K_M", "Q8_0", "F16"])


# ------------------------------------------------------------------------------------------------------ pure helpers


def test_every_configurable_type_is_a_llama_cpp_file_type():
    values = {t: export_gguf.ftype_of(t) for t in GgufType.__args__}
    assert values["Q4_K_M"] == 15 and values["Q8_0"] == 7 and values["Q4_0"] == 2 and values["F16"] == 1
    assert values["BF16"] == 32 and values["F32"] == 0 and values["Q5_K_M"] == 17
    assert len(set(values.values())) == len(values)


def test_storage_plan_names_the_fallbacks_of_widths_k_quants_do_not_tile():
    assert export_gguf.storage_plan(TULU_WIDTHS, "Q4_K_M") == []  # 5120 and 13824 are multiples of 256
    notes = export_gguf.storage_plan(STANDIN_WIDTHS, "Q4_K_M")
    assert notes == ["width 576 (q/k/v, gate/up, attention output): Q5_0"]  # 1536 = 6 x 256 fits
    assert export_gguf.storage_plan(STANDIN_WIDTHS, "Q5_K_M")[0].endswith("Q5_1")
    assert export_gguf.storage_plan(STANDIN_WIDTHS, "Q8_0") == []  # blocks of 32
    assert export_gguf.storage_plan({**STANDIN_WIDTHS, "hidden_size": 600}, "F16") == []


def test_a_width_no_block_fits_is_refused_in_one_sentence():
    odd = {"hidden_size": 600, "num_attention_heads": 10, "intermediate_size": 1600}  # 600 % 32 != 0
    with pytest.raises(
        GgufError,
        match=r"q/k/v, gate/up, attention output width 600 fits neither Q4_K's blocks of 256 nor Q5_0's of 32.*F16",
    ):
        export_gguf.storage_plan(odd, "Q4_K_M")
    with pytest.raises(GgufError, match="Q4_0"):
        export_gguf.storage_plan(odd, "Q4_0")


def test_bits_and_size_estimates():
    assert export_gguf.nominal_bits("Q4_K_M") == 4.5 and export_gguf.nominal_bits("Q8_0") == 8.5
    assert export_gguf.bulk_type("Q3_K_L") == "Q3_K" and export_gguf.bulk_type("IQ4_XS") == "IQ4_XS"
    params = 13_000_000_000
    estimate = export_gguf.estimated_bytes(["Q4_K_M"], params)
    assert params * 4.85 / 8 + params * 2 < estimate <= params * 6 / 8 + params * 2  # the file + the F16 source


def test_unknown_type_and_duplicates_are_config_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("export_gguf:\n  types: [Q4_K_X]\n")
    with pytest.raises(ConfigError, match="export_gguf.types"):
        load_config(path)
    path.write_text("export_gguf:\n  types: [Q8_0, Q8_0]\n")
    with pytest.raises(ConfigError, match="twice"):
        load_config(path)


# ------------------------------------------------------------------------------------------------------ the export


def test_one_file_per_type_with_its_metadata_inside(exported, tiny):
    out = exported.out
    names = [f.file for f in exported.files]
    assert names == ["tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf", "tiny-F16.gguf"]
    assert sorted(p.name for p in out.glob("*.gguf")) == sorted([*names, "imatrix.gguf"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the converter's F16 source is gone
    record = json.loads((out / "gguf.json").read_text())
    assert [f["type"] for f in record["files"]] == ["Q4_K_M", "Q8_0", "F16"]
    digest, per_file = export_gguf.source_digest(tiny)
    for entry in exported.files:
        meta = read_metadata(out / entry.file)
        assert meta["general.name"] == "tiny" and meta["general.license"] == "apache-2.0"
        assert meta["tulu_quant.source_sha256"] == digest == exported.source_sha256
        assert meta["general.file_type"] == export_gguf.ftype_of(entry.type)
        assert "<|assistant|>" in meta["tokenizer.chat_template"]  # the Tulu template travels in the file
        assert meta["tokenizer.ggml.model"] == "llama"  # SentencePiece, as LLaMA-1's
        assert entry.sha256 == export_gguf.sha256_of(out / entry.file)
    assert json.loads(exported.inputs["weights_sha256"]) == per_file
    assert (out / "tokenizer.model").is_file() and (out / "tokenizer_config.json").is_file()


def test_types_store_what_they_promise_and_shrink_the_file(exported):
    by_type = {f.type: f for f in exported.files}
    assert "Q4_K" in by_type["Q4_K_M"].tensor_types and "Q6_K" in by_type["Q4_K_M"].tensor_types
    assert set(by_type["Q8_0"].tensor_types) <= {"Q8_0", "F32"}
    assert set(by_type["F16"].tensor_types) <= {"F16", "F32"}
    assert by_type["Q4_K_M"].fallbacks == []
    assert by_type["Q4_K_M"].bits_per_weight < by_type["Q8_0"].bits_per_weight < by_type["F16"].bits_per_weight
    assert 15.9 < by_type["F16"].bits_per_weight < 17  # 16 bits plus the float32 norms


def test_verification_scores_each_file_against_torch(exported):
    by_type = {f.type: f.verification for f in exported.files}
    assert by_type["F16"]["top1_agreement"] >= 95.0 and by_type["F16"]["kl_mean"] < 1e-4  # f16 activations: near-ties
    assert by_type["Q8_0"]["kl_mean"] < by_type["Q4_K_M"]["kl_mean"]
    for v in by_type.values():
        assert v["llama_tokenizer_agrees"] is True and v["generated_tokens"] > 0


def test_importance_matrix_is_the_mean_squared_input_of_every_matrix(exported, tiny, calib):
    """imatrix.gguf against a direct computation with the whole model in memory and hooks on each Linear."""
    from transformers import AutoModelForCausalLM

    from tulu_quant.stages.calibrate import load_samples

    stored = export_gguf.read_imatrix(exported.out / "imatrix.gguf")
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        for module, tensor in export_gguf.IMATRIX_TENSORS.items():
            name = f"blk.{i}.{tensor}.weight"

            def hook(mod, args, name=name):
                x = args[0].reshape(-1, args[0].shape[-1]).double()
                sums[name] = sums.get(name, 0) + (x * x).sum(0)

            hooks.append(layer.get_submodule(module).register_forward_pre_hook(hook))
    samples = load_samples(calib)
    with torch.no_grad():
        model(samples)
    assert sorted(stored) == sorted(sums) and len(stored) == 2 * 7
    for name, total in sums.items():
        expected = (total / samples.numel()).float().numpy()
        np.testing.assert_allclose(stored[name], expected, rtol=2e-4)
    assert exported.imatrix["samples"] == 6 and exported.imatrix["tokens"] == 6 * 48


def test_the_matrix_reaches_llama_cpps_quantizer(exported, tiny, tmp_path):
    plain = export(tiny, tmp_path / "plain", None, types=["Q4_K_M"], imatrix=False, verify=False)
    with_matrix = next(f for f in exported.files if f.type == "Q4_K_M")
    assert plain.files[0].imatrix is False and with_matrix.imatrix is True
    assert plain.files[0].sha256 != with_matrix.sha256  # same model, same type: the weights differ
    assert read_metadata(plain.out / plain.files[0].file)["tulu_quant.imatrix"] == "none"
    assert not (plain.out / "imatrix.gguf").exists()


# ------------------------------------------------------------------------------------------------------ bad input


def test_without_a_calibration_folder_one_is_built_beside_the_output_as_quantize_does(tiny, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text(SENTENCES * 40)
    cfg = run_config(
        export_gguf=ExportGgufConfig(types=["Q4_K_M"], verify=False, threads=2),
        calibrate={"mix": [{"source": f"file:{text}"}], "num_samples": 4, "seq_len": 32, "evaluation": []},
        model__name="tiny",
        model__chat_format="tulu",
    )
    result = export_gguf.run(cfg, tiny, tmp_path / "gguf", log_file=tmp_path / "g.log")
    record = json.loads((tmp_path / "gguf.calib" / "calibration.json").read_text())
    assert (record["num_samples"], record["seq_len"]) == (4, 32)
    assert result.imatrix["samples"] == 4 and result.imatrix["calibration"] == str((tmp_path / "gguf.calib").resolve())
    assert result.files[0].imatrix is True


def test_unknown_architecture_is_one_sentence(tiny, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["FrobnicatorForCausalLM"]}))
    with pytest.raises(GgufError, match=r"architecture FrobnicatorForCausalLM is not one llama.cpp's converter knows"):
        export(other, tmp_path / "out", None, imatrix=False, types=["Q8_0"])
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial*"))


def test_failed_verification_leaves_nothing_behind(tiny, tmp_path):
    with pytest.raises(GgufError, match="failed verification: its top-1 agreement"):
        export(tiny, tmp_path / "out", None, imatrix=False, types=["Q4_0"], min_top1_agreement=100.0)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial*"))


def test_existing_output_needs_force(tiny, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    cfg = run_config(export_gguf={"imatrix": False, "types": ["Q8_0"]})
    with pytest.raises(PathExists, match="--force"):
        export_gguf.run(cfg, tiny, tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


def test_missing_llama_cpp_python_names_make_install(tiny, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_llama(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    with pytest.raises(MissingLibrary, match="make install"):
        export(tiny, tmp_path / "out", None, imatrix=False, types=["Q8_0"])
    assert not (tmp_path / "out").exists()
