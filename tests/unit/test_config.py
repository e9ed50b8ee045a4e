"""Every YAML in configs/ validates; bad configs fail with one sentence naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulu_quant.config import ConfigError, QuantizeConfig, build, load_config, load_suite, load_variant, read_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_run_configs_validate(path):
    cfg = load_config(path)
    assert cfg.model.name and cfg.stages
    for variant in cfg.sweep:
        load_variant(variant)
    load_suite(cfg.validate_.suite)


@pytest.mark.parametrize("path", sorted((CONFIGS / "variants").glob("*.yaml")), ids=lambda p: p.name)
def test_variants_validate(path):
    build(QuantizeConfig, read_yaml(path), str(path))


@pytest.mark.parametrize("path", sorted((CONFIGS / "eval").glob("*.yaml")), ids=lambda p: p.name)
def test_suites_validate(path):
    load_suite(path.stem)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


BASE = "model: {name: m, base: /b, diff: /d}\nrun_dir: /tmp/r\n"


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, BASE + "recover: {dtpye: float16}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'recover\.dtpye'"):
        load_config(path)


def test_wrong_type_and_missing_key(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'recover\.dtype' = 'int8' is invalid"):
        load_config(write(tmp_path, BASE + "recover: {dtype: int8}\n"))
    with pytest.raises(ConfigError, match=r"required key 'validate\.gates\.0\.metric' is missing"):
        load_config(write(tmp_path, BASE + "validate: {gates: [{max_drop: 1}]}\n"))


def test_no_file_is_every_default_and_run_dir_follows_the_model_name(tmp_path):
    from tulu_quant.config import RunConfig

    assert load_config(None) == RunConfig()
    assert load_config(None).run_dir == Path("runs/tulu-13b") and load_config(None).model.base is None
    assert load_config(write(tmp_path, "model: {name: x}\n")).run_dir == Path("runs/x")


def test_stages_out_of_order(tmp_path):
    with pytest.raises(ConfigError, match="pipeline order"):
        load_config(write(tmp_path, BASE + "stages: [quantize, recover]\n"))


def test_overrides_and_variant_layering(tmp_path):
    path = write(tmp_path, BASE + "quantize: {variant: gptq-4bit-128g, damp_percent: 0.2}\n")
    cfg = load_config(path)
    assert (cfg.quantize.group_size, cfg.quantize.damp_percent) == (128, 0.2)  # the YAML's own key beats the variant
    cfg = load_config(path, {"quantize.variant": "gptq-4bit-32g-actorder", "model.base": "/other"})
    assert (cfg.quantize.group_size, cfg.quantize.desc_act, cfg.quantize.damp_percent) == (
        32,
        True,
        load_variant("gptq-4bit-32g-actorder").get("damp_percent", QuantizeConfig().damp_percent),
    )
    assert cfg.model.base == Path("/other")
    with pytest.raises(ConfigError, match="unknown variant 'nope'"):
        load_config(path, {"quantize.variant": "nope"})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


def test_suite_source_windows_must_name_a_source(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("perplexity: {sources: [wiki], source_windows: {shakespear: 8}}\n")
    with pytest.raises(ConfigError, match=r"s\.yaml.*source_windows names \['shakespear'\]"):
        load_suite(str(path))


@pytest.mark.parametrize(
    "repo_id, ok",
    [
        ("you/tulu-13b-GPTQ", True),
        ("tulu-13b", True),
        ("a/b.c_d", True),
        ("not a repo", False),
        ("a--b/c", False),
        ("a/b..c", False),
        ("-a/b", False),
        ("a/b.", False),
        ("a/b/c", False),
        ("x" * 97, False),
    ],
)
def test_publish_repo_id_follows_the_hub_naming_rule_without_push(repo_id, ok):
    from tulu_quant.config import PublishConfig

    if ok:
        assert PublishConfig(repo_id=repo_id).repo_id == repo_id
    else:
        with pytest.raises(ValueError, match="not a Hub repository id"):
            PublishConfig(repo_id=repo_id)
