"""The run directory's manifest (tulu_quant/manifest.py): what makes a stage fresh or stale, fingerprints, and
adopting another run's finished stages."""

from __future__ import annotations

import json
import os

import pytest

from tulu_quant.manifest import MANIFEST, Manifest, library_versions


def finished(tmp_path, name="recover"):
    """A manifest recording one finished stage whose input is IN/w.txt and whose output is OUT/w.txt."""
    (tmp_path / "in").mkdir(parents=True)
    (tmp_path / "in" / "w.txt").write_text("weights")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "w.txt").write_text("result")
    manifest = Manifest.load(tmp_path)
    inputs, outputs = [tmp_path / "in"], [tmp_path / "out"]
    prints = manifest.fingerprint(inputs)
    manifest.record(
        name,
        config_hash="h1",
        config={"k": 1},
        inputs=inputs,
        input_prints=prints,
        outputs=outputs,
        seconds=1.5,
        peak_rss=10,
        summary={"n": 1},
    )
    manifest.save()
    return manifest, inputs, outputs


def test_fresh_until_config_inputs_or_outputs_change(tmp_path):
    manifest, inputs, outputs = finished(tmp_path)
    manifest = Manifest.load(tmp_path)
    assert manifest.is_fresh("recover", "h1", inputs, outputs) == (True, "inputs and configuration unchanged")
    assert manifest.is_fresh("recover", "h2", inputs, outputs)[1] == "its configuration changed"
    assert manifest.is_fresh("calibrate", "h1", inputs, outputs) == (False, "not run yet")
    stat = (tmp_path / "in" / "w.txt").stat()
    os.utime(tmp_path / "in" / "w.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert manifest.is_fresh("recover", "h1", inputs, outputs)[1] == "its inputs changed"
    os.utime(tmp_path / "in" / "w.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (tmp_path / "out" / "w.txt").write_text("truncated")
    assert "missing or changed" in manifest.is_fresh("recover", "h1", inputs, outputs)[1]


def test_record_hashes_outputs_and_later_stages_fingerprint_them_by_hash(tmp_path):
    manifest, _, outputs = finished(tmp_path)
    entry = json.loads((tmp_path / MANIFEST).read_text())["stages"]["recover"]
    assert entry["outputs"]["out/w.txt"]["bytes"] == 6 and len(entry["outputs"]["out/w.txt"]["sha256"]) == 64
    assert entry["versions"]["python"] and entry["seconds"] == 1.5 and entry["output_dirs"] == ["out"]
    assert manifest.fingerprint(outputs) == {"out/w.txt": entry["outputs"]["out/w.txt"]["sha256"]}
    assert manifest.fingerprint([tmp_path / "nowhere"]) == {"nowhere": "missing"}
    assert manifest.output_dir("recover") == tmp_path / "out" and manifest.output_dir("quantize") is None


def test_adopting_another_runs_stage_keeps_its_paths_absolute(tmp_path):
    other, *_ = finished(tmp_path / "shared")
    mine = Manifest.load(tmp_path / "variant")
    mine.adopt(other, ["recover", "calibrate"])
    assert list(mine.stages) == ["recover"]  # only finished stages are adopted
    assert mine.output_dir("recover") == (tmp_path / "shared" / "out").resolve()


def test_an_unreadable_manifest_is_a_clear_error(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="move it away"):
        Manifest.load(tmp_path)


def test_library_versions_name_python_and_tulu_quant():
    versions = library_versions()
    assert versions["python"] and versions["tulu-quant"] and versions["torch"]
