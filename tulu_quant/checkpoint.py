"""Checkpoint I/O that never holds more than one tensor: streaming safetensors read/write, `.bin` shards, atomic dirs.

safetensors layout: 8-byte little-endian header length N, N bytes of JSON header {name: {dtype, shape, data_offsets}},
then the raw data. Reading with plain seek/read (not mmap) keeps pages out of our RSS; writing the header first (shapes
are known before any data is read) lets each tensor go to disk as soon as it is computed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingPath, PathExists, UserValueError

log = logging.getLogger(__name__)

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


class CheckpointError(UserValueError):
    """An unreadable, truncated or inconsistent checkpoint; the message names the file."""


def _dtypes():
    import torch

    return {
        "F64": torch.float64,
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I64": torch.int64,
        "I32": torch.int32,
        "I16": torch.int16,
        "I8": torch.int8,
        "U8": torch.uint8,
        "BOOL": torch.bool,
        "F8_E4M3": torch.float8_e4m3fn,
        "F8_E5M2": torch.float8_e5m2,
    }


def dtype_code(dtype) -> str:
    return {v: k for k, v in _dtypes().items()}[dtype]


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it looks like, known without reading its data."""

    name: str
    file: Path
    dtype: object  # torch.dtype
    shape: tuple[int, ...]
    offset: int = 0  # absolute byte offset in a safetensors file
    nbytes: int = 0

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise CheckpointError(f"{path}: truncated safetensors file (header says {n} bytes, file has {size}).")
            header = json.loads(f.read(n))
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({err}); re-download or re-convert it."
        ) from None
    dtypes, infos, base = _dtypes(), {}, 8 + n
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        if base + end > size:
            raise CheckpointError(
                f"{path}: truncated safetensors file (tensor {name} ends past the end of the file); re-download it."
            )
        if meta["dtype"] not in dtypes:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {meta['dtype']}.")
        infos[name] = TensorInfo(name, path, dtypes[meta["dtype"]], tuple(meta["shape"]), base + start, end - start)
    return infos


def read_tensor(info: TensorInfo):
    """Read one tensor into fresh memory (no mmap)."""
    import torch

    if info.file.suffix != ".safetensors":
        raise AssertionError("read_tensor reads safetensors; use BinShard for .bin")
    buf = bytearray(info.nbytes)
    with open(info.file, "rb") as f:
        f.seek(info.offset)
        if f.readinto(buf) != info.nbytes:
            raise CheckpointError(f"{info.file}: truncated while reading {info.name}; re-download it.")
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=info.dtype)
    return torch.frombuffer(buf, dtype=info.dtype).reshape(info.shape)


class BinShard:
    """A PyTorch `.bin` shard opened with mmap and weights_only=True (never unpickles arbitrary objects)."""

    def __init__(self, path: Path):
        import torch

        self.path = path
        try:
            self.state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError ... for bad files
            raise CheckpointError(
                f"{path}: unreadable PyTorch checkpoint ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}); re-download it or convert it to safetensors."
            ) from None
        if not isinstance(self.state, dict):
            raise CheckpointError(f"{path}: expected a state dict, found {type(self.state).__name__}.")


@dataclass
class Checkpoint:
    """The tensors of a Hugging Face model directory, indexed by name, read lazily one at a time."""

    root: Path
    tensors: dict[str, TensorInfo]
    format: str  # "safetensors", "bin" or "mixed"

    def files(self) -> list[Path]:
        return sorted({t.file for t in self.tensors.values()})

    def total_bytes(self) -> int:
        return sum(t.numel * t.dtype.itemsize for t in self.tensors.values())

    @contextlib.contextmanager
    def reader(self) -> Iterator[callable]:
        """Yield get(name) -> tensor; `.bin` shards stay open (mmap) only while used, one at a time."""
        current: dict[Path, BinShard] = {}

        def get(name: str):
            info = self.tensors[name]
            if info.file.suffix == ".safetensors":
                return read_tensor(info)
            if info.file not in current:
                current.clear()
                current[info.file] = BinShard(info.file)
            return current[info.file].state[name]

        try:
            yield get
        finally:
            current.clear()


def _index_files(root: Path, index_name: str) -> dict[str, Path]:
    index_path = root / index_name
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{index_path}: unreadable index ({err}); re-download it.") from None
    files = {name: root / fname for name, fname in weight_map.items()}
    for path in sorted(set(files.values())):
        if not path.is_file():
            raise CheckpointError(f"{index_path}: names shard {path.name}, which is missing; download it.")
    return files


def open_checkpoint(root: Path) -> Checkpoint:
    """Index every tensor of a model directory from file headers only (no tensor data is read)."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory; pass a Hugging Face model directory.")
    if (root / SAFETENSORS_INDEX).is_file():
        files = sorted(set(_index_files(root, SAFETENSORS_INDEX).values()))
    elif (root / BIN_INDEX).is_file():
        files = sorted(set(_index_files(root, BIN_INDEX).values()))
    else:
        files = sorted(root.glob("*.safetensors")) or sorted(root.glob("pytorch_model*.bin"))
    if not files:
        raise CheckpointError(f"{root}: no *.safetensors or pytorch_model*.bin weights found.")
    tensors: dict[str, TensorInfo] = {}
    for path in files:
        if path.suffix == ".safetensors":
            found = read_safetensors_header(path)
        else:
            shard = BinShard(path)
            found = {n: TensorInfo(n, path, t.dtype, tuple(t.shape)) for n, t in shard.state.items()}
            del shard
        for name in found.keys() & tensors.keys():
            raise CheckpointError(f"{path}: tensor {name} also appears in {tensors[name].file.name}.")
        tensors.update(found)
    kinds = {p.suffix for p in files}
    return Checkpoint(root, tensors, "mixed" if len(kinds) > 1 else kinds.pop().lstrip("."))


# ------------------------------------------------------------------------------------------------------------ writing


LLAMA_ARCHITECTURES = ("LlamaForCausalLM",)


def check_model_folder(path: Path, flag: str) -> None:
    """What every command checks of a model folder it is given before any work: it exists and is not empty; a
    config.json is JSON of a LLaMA-architecture causal LM; every safetensors shard is whole (headers only). Folders
    without config.json (an ONNX export, a run directory) and files (a .gguf) are left to the command."""
    path = Path(path)
    if not path.exists():
        raise MissingPath(f"{path}: no such file or folder; pass an existing one as {flag}.")
    if not path.is_dir():
        return
    if not any(path.iterdir()):
        raise MissingPath(f"{path}: the folder is empty; pass a model folder (config.json and weights) as {flag}.")
    config_path = path / "config.json"
    if not config_path.is_file():
        return
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_path}: not valid JSON ({err}); re-create or re-download it.") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object; re-create or re-download it.")
    architectures = config.get("architectures") or []
    if config.get("model_type") != "llama" and not set(architectures) & set(LLAMA_ARCHITECTURES):
        raise CheckpointError(
            f"{config_path}: model_type {config.get('model_type')!r} ({', '.join(architectures) or 'no architectures'})"
            f" is not a LLaMA-architecture causal LM, which is what tulu-quant handles; pass a LLaMA model as {flag}."
        )
    if any(path.glob("*.safetensors")):
        open_checkpoint(path)


def plan_shards(entries: list[tuple[str, object, tuple[int, ...]]], max_shard_bytes: int) -> list[list[tuple]]:
    """Split (name, dtype, shape) entries, in order, into shards of at most max_shard_bytes (a larger tensor alone)."""
    shards: list[list[tuple]] = [[]]
    size = 0
    for entry in entries:
        _, dtype, shape = entry
        nbytes = dtype.itemsize
        for d in shape:
            nbytes *= d
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    return shards


class SafetensorsWriter:
    """Write one safetensors file whose header is fixed up front; tensors are then appended in header order."""

    def __init__(
        self, path: Path, entries: list[tuple[str, object, tuple[int, ...]]], metadata: dict[str, str] | None = None
    ):
        header: dict[str, object] = {"__metadata__": {"format": "pt", **(metadata or {})}}
        offset = 0
        self.expected: list[tuple[str, object, tuple[int, ...], int]] = []
        for name, dtype, shape in entries:
            nbytes = dtype.itemsize
            for d in shape:
                nbytes *= d
            header[name] = {"dtype": dtype_code(dtype), "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self.expected.append((name, dtype, tuple(shape), nbytes))
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.path = path
        self.file = open(path, "wb")
        self.file.write(struct.pack("<Q", len(raw)) + raw)
        self.sha = hashlib.sha256(struct.pack("<Q", len(raw)) + raw)
        self.position = 0

    def write(self, name: str, tensor) -> None:
        exp_name, dtype, shape, nbytes = self.expected[self.position]
        if name != exp_name or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise AssertionError(
                f"writer expected {exp_name} {dtype} {shape}, got {name} {tensor.dtype} {tuple(tensor.shape)}"
            )
        if nbytes:
            import torch

            data = memoryview(tensor.contiguous().view(-1).view(dtype=torch.uint8).numpy())  # no copy
            self.file.write(data)
            self.sha.update(data)
        self.position += 1

    def close(self) -> str:
        """Finish the file; returns its sha256."""
        if self.position != len(self.expected):
            raise AssertionError(f"{self.path}: {len(self.expected) - self.position} tensors were never written")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self.sha.hexdigest()


def shard_names(n: int, stem: str = "model") -> list[str]:
    if n == 1:
        return [f"{stem}.safetensors"]
    return [f"{stem}-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


def write_index(out: Path, shards: list[list[tuple]], names: list[str]) -> None:
    if len(names) == 1:
        return
    total = sum(dtype.itemsize * _numel(shape) for shard in shards for _, dtype, shape in shard)
    weight_map = {name: fname for shard, fname in zip(shards, names) for name, _, _ in shard}
    (out / SAFETENSORS_INDEX).write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ------------------------------------------------------------------------------------------------------------ files


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dir_size(path: Path) -> int:
    """Bytes of a folder's files (of a file: its size)."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def refuse_existing(out: Path, force: bool) -> None:
    """Refuse an existing `out` without force, and an `out` that cannot be made: one under a file, or under a folder
    this user cannot write."""
    out = Path(out)
    if out.exists() and not force:
        raise PathExists(f"{out} already exists; choose another --out or pass --force to replace it.")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserValueError(f"{out}: cannot be written because {parent} is a file; choose another --out.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserValueError(f"{out}: cannot be written because {parent} is not writable; choose another --out.")


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; on success it replaces `out`, on any error it is removed.

    Nothing that looks finished is ever left behind: `out` appears only after the body completed.
    """
    out = Path(out)
    refuse_existing(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def copy_if_present(src_dir: Path, dst_dir: Path, names) -> list[str]:
    copied = []
    for name in names:
        if (src_dir / name).is_file():
            shutil.copy2(src_dir / name, dst_dir / name)
            copied.append(name)
    return copied


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")  # one of these is needed to tokenize at all


def has_vocabulary(folder: Path) -> bool:
    """Whether `folder` holds a tokenizer that can tokenize: a tokenizer_config.json alone cannot."""
    return any((Path(folder) / name).is_file() for name in VOCABULARY_FILES)
