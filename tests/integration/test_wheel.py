"""The wheel stands alone: built from the checkout and installed into a fresh virtual environment outside it, the
command runs and finds its configs (variants, eval suites) and the demo page as package data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installed_outside_the_checkout_runs_and_finds_its_configs(tmp_path):
    build_dir_existed = (ROOT / "build").exists()  # setuptools builds in the checkout's build/ (git-ignored)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            tmp_path / "dist",
            ROOT,
        ],
        check=True,
        capture_output=True,
    )
    if not build_dir_existed:
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    (wheel,) = (tmp_path / "dist").glob("tulu_quant-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    # The wheel's files go into the fresh environment; its dependencies (pydantic, PyYAML ...) are borrowed from this
    # one through a path entry (no install from the network), which does not activate this checkout's editable install.
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True, capture_output=True
    )
    (Path(purelib) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    def run(*args):
        return subprocess.run([env_dir / "bin" / "tulu-quant", *args], cwd=outside, capture_output=True, text=True)

    code = "import tulu_quant; print(tulu_quant.__file__)"
    where = subprocess.run([python, "-c", code], cwd=outside, capture_output=True, text=True).stdout
    assert where.startswith(purelib), where  # the installed copy, not the checkout
    assert run("--help").returncode == 0
    plan = run("plan", "--model", "13B", "--set", "quantize.variant=gptq-4bit-32g-actorder")
    assert plan.returncode == 0, plan.stderr
    assert "LLaMA-1 13B" in plan.stderr and "4-bit g32" in plan.stderr  # the variant file came from package data
    code = "from tulu_quant.config import load_suite; from tulu_quant.demo import APP; "
    code += "print(load_suite('quick').perplexity.sources, APP.is_file(), APP)"
    suites = subprocess.run([python, "-c", code], cwd=outside, capture_output=True, text=True)
    assert suites.stdout.startswith("['wiki', 'shakespeare'] True " + purelib), suites.stderr
