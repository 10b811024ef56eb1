"""Data-set runs: streamed shards, atomic writes, resume, and ranks under torchrun / accelerate.

A run splits the data set into shards of a fixed size. Shard ``k`` holds images ``[k*S, (k+1)*S)``;
its targets come from a generator seeded with ``seed + k``; it is computed as one batch. So a shard's
bits depend only on its own images and seed — never on how many ranks ran, nor on what was killed
and resumed. With refilling (``RunConfig.max_batch``, ``RunConfig.group_shards = G``), ``G`` consecutive
shards are searched together with at most ``max_batch`` images in flight, so only the group's last batch
ends in a tail; the group is then the unit of work (ranks take whole groups, a group killed half-written is
recomputed whole on resume), and a shard's bits depend only on its group's images and seeds. Each shard
is written as ``shard_XXXXX.safetensors`` and then marked done by an atomic ``shard_XXXXX.json`` sidecar
(temp file + rename). ``resume`` skips shards whose sidecar exists.
Ranks take shards (groups) ``k`` with ``k % world_size == rank``; rank 0 shows progress, waits for the others
and merges: ``summary.json``, ``manifest.json`` and the report figures.

The same code runs in one process, under ``torchrun --nproc_per_node N`` and under ``accelerate launch``.
``torchrun`` and ``accelerate launch --multi_gpu`` (which runs torchrun's launcher, on CPU too) set
``RANK``/``WORLD_SIZE``; accelerate's multi-CPU launch, ``accelerate launch --cpu --mpirun_hostfile F``,
starts the ranks with ``mpirun``, which sets the MPI variables (``PMI_RANK``/``PMI_SIZE`` for MPICH and
Intel MPI, ``OMPI_COMM_WORLD_*`` for Open MPI, ``MV2_COMM_WORLD_*`` for MVAPICH), read here the way
accelerate reads them. The gloo backend works on CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from captum_cfx._io import save_safetensors_atomic, write_json_atomic
from captum_cfx._validation import check_float
from captum_cfx.objectives import choose_targets

__all__ = ["DataSource", "RunConfig", "local_device", "open_data", "rank_info", "run_sharded"]

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


# ----------------------------------------------------------------------------- data sources
class DataSource:
    """Random access to ``(images, labels)`` by index range, without holding the data set in memory."""

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, start: int, stop: int) -> tuple[Tensor, Tensor, list[str]]:
        """Images ``(n, C, H, W)`` in [0, 1], labels ``(n,)`` (-1 when unknown), and problems found."""
        raise NotImplementedError


class _TensorSource(DataSource):
    def __init__(self, images: Any, labels: Any | None, image_shape: tuple[int, int, int] | None = None) -> None:
        shape = tuple(images.shape)
        if len(shape) not in (3, 4):
            raise ValueError(f"`data` images must be (N, C, H, W) or (N, H, W); got shape {shape}")
        if image_shape is not None:
            got = (1, *shape[1:]) if len(shape) == 3 else shape[1:]
            if tuple(got) != tuple(image_shape):
                c, h, w = image_shape
                hint = (" (channels-last: store them as (N, C, H, W))" if len(shape) == 4 and shape[1:] == (h, w, c)
                        else "")
                raise ValueError(f"`data` images must be (N, {c}, {h}, {w}) for this generator; got {shape}{hint}")
        if labels is not None:
            if len(labels) != shape[0] or len(tuple(labels.shape)) != 1:
                raise ValueError(f"`data` labels must be one per image, shape ({shape[0]},); got {tuple(labels.shape)}")
            kind = str(getattr(labels, "dtype", ""))
            if not any(t in kind for t in ("int", "uint", "float")):
                raise ValueError(f"`data` labels must be integers (class indices) or floats (regression "
                                 f"targets); got dtype {kind}")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def get(self, start: int, stop: int) -> tuple[Tensor, Tensor, list[str]]:
        x = torch.as_tensor(np.array(self.images[start:stop])).float()
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if self.labels is None:
            return x, torch.full((len(x),), -1, dtype=torch.long), []
        y = torch.as_tensor(np.asarray(self.labels[start:stop]))
        return x, (y.float() if y.is_floating_point() else y.long()), []


def _npz_memmap(path: Path, key: str) -> np.ndarray | None:
    """Memory-map member ``key`` of an uncompressed ``.npz`` (``np.savez``); ``None`` when it is compressed."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            return None
        shape, fortran, dtype = read_header[version](f)
        if dtype.hasobject:
            return None
        offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


class _SafetensorsRows:
    """Rows of one tensor of a safetensors file, read slice by slice (the file is never loaded whole)."""

    def __init__(self, path: Path, key: str) -> None:
        from safetensors import safe_open

        self.path, self.key = str(path), key
        with safe_open(self.path, framework="pt") as f:
            self.shape = tuple(f.get_slice(key).get_shape())

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> Tensor:
        from safetensors import safe_open

        with safe_open(self.path, framework="pt") as f:
            return f.get_slice(self.key)[rows]


class _FolderSource(DataSource):
    """A folder of PNG/JPEG/... images in file-name order; ``image_shape`` ``None`` reads it from the first image
    (grey -> 1 channel, else 3). Pixels are read in ``[0, 1]`` and mapped linearly to ``pixel_range``.
    ``labels``: a CSV of ``filename,label`` rows (see :func:`read_labels_csv`); images it does not name are
    unlabelled (-1, or NaN for regression targets)."""

    def __init__(self, folder: Path, image_shape: tuple[int, int, int] | None, labels: str | Path | None = None,
                 pixel_range: tuple[float, float] | None = None) -> None:
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"`data` folder {str(folder)!r} holds no images ({sorted(_IMAGE_SUFFIXES)})")
        self.shape = image_shape if image_shape is not None else _shape_of(self.files[0])
        self.pixel_range = (0.0, 1.0) if pixel_range is None else pixel_range
        self.labels: Tensor | None = None
        if labels is not None:
            table = read_labels_csv(labels)
            names = {p.name for p in self.files}
            unknown = sorted(set(table) - names)
            if unknown:
                raise ValueError(f"`labels` {str(labels)!r} names {len(unknown)} file(s) that are not images of "
                                 f"{str(folder)!r}: {unknown[:5]}")
            values = list(table.values())
            integral = all(float(v).is_integer() for v in values)
            missing = -1 if integral else float("nan")
            self.labels = torch.tensor([table.get(p.name, missing) for p in self.files],
                                       dtype=torch.long if integral else torch.float32)

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, path: Path) -> Tensor:
        from PIL import Image

        c, h, w = self.shape
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                raise ValueError(f"size {im.size[0]}x{im.size[1]}, expected {w}x{h}")
            arr = np.asarray(im, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr)
        t = t.unsqueeze(0) if c == 1 else t.permute(2, 0, 1)
        lo, hi = self.pixel_range
        return t if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * t

    def get(self, start: int, stop: int) -> tuple[Tensor, Tensor, list[str]]:
        imgs, problems = [], []
        for i, p in enumerate(self.files[start:stop], start):
            try:
                imgs.append(self._read(p))
            except Exception as e:  # noqa: BLE001 - any unreadable file is reported and skipped
                problems.append(f"row {i}: {p.name}: {e}")
                imgs.append(torch.full(self.shape, float("nan")))
        x = torch.stack(imgs) if imgs else torch.zeros(0, *self.shape)
        y = (self.labels[start:stop].clone() if self.labels is not None
             else torch.full((len(x),), -1, dtype=torch.long))
        return x, y, problems


def read_labels_csv(path: str | Path) -> dict[str, float]:
    """A labels CSV: one ``filename,label`` row per image (a header row such as ``filename,label`` is skipped);
    ``label`` is a class index (integers) or a regression target (any number). File names are the images'
    names inside the folder (no directories)."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"`labels` must be a CSV file of filename,label rows; {str(path)!r} is not a file")
    table: dict[str, float] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"`labels`: cannot read {str(path)!r} as a CSV ({type(e).__name__}: {e})") from e
    for n, row in enumerate(rows, 1):
        if len(row) != 2:
            raise ValueError(f"`labels` {path.name} line {n}: expected 2 columns (filename,label); got {row[:4]}")
        name, raw = row[0].strip(), row[1].strip()
        try:
            value = float(raw)
        except ValueError:
            if n == 1:  # a header row
                continue
            raise ValueError(f"`labels` {path.name} line {n}: the label must be a number; got {raw!r}") from None
        if not np.isfinite(value):
            raise ValueError(f"`labels` {path.name} line {n}: the label must be finite; got {raw!r}")
        if "/" in name or "\\" in name:
            raise ValueError(f"`labels` {path.name} line {n}: a file name inside the folder, not a path; got {name!r}")
        if name in table:
            raise ValueError(f"`labels` {path.name} line {n}: {name!r} is listed twice")
        table[name] = value
    if not table:
        raise ValueError(f"`labels` {path.name} holds no filename,label rows")
    return table


class _SquaresSource(DataSource):
    """``squares-<size>:<n>``: procedurally generated squares, each block of 1,000 from its own seed,
    so any index range is generated on demand and the data set never exists in memory at once."""

    block = 1000

    def __init__(self, size: int, n: int) -> None:
        from captum_cfx.datasets import Squares

        self.world, self.n = Squares(image_size=size), n

    def __len__(self) -> int:
        return self.n

    def get(self, start: int, stop: int) -> tuple[Tensor, Tensor, list[str]]:
        xs, ys = [], []
        for b in range(start // self.block, (max(stop, start + 1) - 1) // self.block + 1):
            s = self.world.sample(self.block, generator=torch.Generator().manual_seed(b))
            lo, hi = max(start - b * self.block, 0), min(stop - b * self.block, self.block)
            xs.append(s.images[lo:hi])
            ys.append(s.targets[lo:hi])
        return torch.cat(xs), torch.cat(ys), []


def _shape_of(path: Path) -> tuple[int, int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            grey = im.mode in ("1", "L", "I", "F", "I;16")
            return (1 if grey else 3, im.size[1], im.size[0])
    except Exception as e:  # noqa: BLE001 - any unreadable first file gets one clear message
        raise ValueError(f"`data`: cannot read the image size of {path.name} ({type(e).__name__}: {e})") from e


def open_data(spec: str, image_shape: tuple[int, int, int] | None = None, *, labels: str | Path | None = None,
              pixel_range: tuple[float, float] | None = None) -> DataSource:
    """Open ``--data`` (the formats are listed in ``docs/bring_your_own.md``):

    - a built-in name: ``mnist-test``, ``mnist-train``, ``squares-<size>:<n>``;
    - a folder of images (``.png``, ``.jpg``/``.jpeg``, ``.bmp``, ``.gif``, ``.tif``), in file-name order, with
      labels from ``labels`` (a CSV of ``filename,label`` rows) or, when that is ``None``, from
      ``<folder>/labels.csv`` if it exists (else unlabelled);
    - a tensor file: ``.npz`` with an ``images`` array ``(N, C, H, W)`` or ``(N, H, W)`` and optionally ``labels``
      ``(N,)``; ``.npy`` (images only); ``.safetensors`` with ``images`` [and ``labels``] tensors; ``.pt`` holding a
      tensor or a dict with ``images`` [and ``labels``], read with ``torch.load(weights_only=True)``, which refuses
      arbitrary pickled objects. Integer labels are class indices (-1 unknown); float labels regression targets.

    Args:
        image_shape: ``(C, H, W)`` a folder's images are read as (``None``: the first image's size, one channel for
            grey images and three otherwise); tensor files and built-in data sets carry their own shape, which
            must match it.
        labels: a labels CSV for a folder (an error for other formats).
        pixel_range: ``(lo, hi)`` a folder's pixels are mapped to from ``[0, 1]`` (``None``: ``[0, 1]``); tensor
            files keep their values."""
    if labels is not None and not Path(spec).is_dir():
        raise ValueError(f"`labels` (a CSV) is for a folder of images; {spec!r} is not a folder (tensor files "
                         "carry their labels inside)")
    if spec in ("mnist-test", "mnist-train"):
        from captum_cfx.datasets import load_mnist

        x, y = load_mnist(spec.split("-")[1])
        return _TensorSource(x, y, image_shape)
    if spec.startswith("squares-") and ":" in spec:
        size, n = spec[len("squares-"):].split(":", 1)
        if not (size.isdigit() and n.isdigit()):
            raise ValueError(f"`data` squares spec must be 'squares-<size>:<n>', e.g. squares-64:50000; got {spec!r}")
        return _SquaresSource(int(size), int(n))
    path = Path(spec)
    if path.is_dir():
        if labels is None and (path / "labels.csv").is_file():
            labels = path / "labels.csv"
        return _FolderSource(path, image_shape, labels, pixel_range)
    if not path.is_file():
        raise ValueError(f"`data` must be a built-in name (mnist-test, mnist-train), a folder or a tensor file; "
                         f"{spec!r} is none of these")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            z = np.load(path, allow_pickle=False)
            if "images" not in z:
                raise ValueError(f"`data`: {path.name} must hold an 'images' array; it holds {list(z.keys())}")
            images = _npz_memmap(path, "images")  # np.savez: mapped; np.savez_compressed: read whole
            return _TensorSource(images if images is not None else z["images"], z["labels"] if "labels" in z else None,
                                 image_shape)
        if suffix == ".npy":
            return _TensorSource(np.load(path, allow_pickle=False, mmap_mode="r"), None, image_shape)
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                if "images" not in keys:
                    raise ValueError(f"`data`: {path.name} must hold an 'images' tensor; it holds {keys}")
                labels = f.get_tensor("labels") if "labels" in keys else None
            return _TensorSource(_SafetensorsRows(path, "images"), labels, image_shape)
        if suffix == ".pt":
            try:  # memory-mapped: only the rows of the current shard are read (zip-format files, torch >= 2.1)
                d = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
            except RuntimeError:  # the legacy (non-zip) format cannot be mapped: read whole
                d = torch.load(path, weights_only=True, map_location="cpu")
            if isinstance(d, Tensor):
                return _TensorSource(d, None, image_shape)
            if isinstance(d, dict) and "images" in d:
                return _TensorSource(d["images"], d.get("labels"), image_shape)
            raise ValueError("`data`: a .pt file must hold a tensor or a dict with 'images'")
    except Exception as e:  # noqa: BLE001 - corrupted or pickled files get one clear message
        if isinstance(e, ValueError) and str(e).startswith("`data`"):
            raise
        raise ValueError(f"`data`: cannot read {str(path)!r} ({type(e).__name__}: {e})") from e
    raise ValueError(f"`data` file must be .npz, .npy, .safetensors or .pt; got {path.name!r}")


# ----------------------------------------------------------------------------- ranks
#: (rank, world size) environment variables, in the order read: torchrun / accelerate's torchrun launcher,
#: then the MPI launchers that ``accelerate launch --cpu --mpirun_hostfile`` drives (MPICH and Intel MPI,
#: Open MPI, MVAPICH) — the same list accelerate's ``PartialState`` reads.
_RANK_ENV = (("RANK", "WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
             ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"))
#: ranks on this machine, from the same launchers
_LOCAL_SIZE_ENV = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")
#: this rank's index on its machine, from the same launchers
_LOCAL_RANK_ENV = ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")


def local_device(device: torch.device | str) -> torch.device:
    """The device this rank should use: ``"cuda"`` without an index becomes ``cuda:<local rank>`` under a
    multi-rank launcher (torchrun, accelerate, MPI), so that ranks on one machine do not share GPU 0; any
    other device is returned unchanged.
    """
    dev = torch.device(device)
    if dev.type != "cuda" or dev.index is not None or rank_info()[1] == 1:
        return dev
    raw = next((os.environ[v] for v in _LOCAL_RANK_ENV if os.environ.get(v, "").strip()), "0")
    try:
        local = int(raw)
    except ValueError:
        raise ValueError(f"launcher environment: the local rank must be an integer; got {raw!r}") from None
    return torch.device("cuda", local)


def rank_info() -> tuple[int, int]:
    """``(rank, world_size)`` from torch.distributed or the launcher's environment (torchrun, accelerate, MPI)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    for rank_var, size_var in _RANK_ENV:
        if os.environ.get(size_var, "").strip():
            try:
                rank, world = int(os.environ.get(rank_var, "0")), int(os.environ[size_var])
            except ValueError:
                raise ValueError(f"launcher environment: {rank_var}={os.environ.get(rank_var)!r} and "
                                 f"{size_var}={os.environ[size_var]!r} must be integers") from None
            if not 0 <= rank < world:
                raise ValueError(f"launcher environment: {rank_var} must be in 0..{size_var}-1; "
                                 f"got {rank_var}={rank}, {size_var}={world}")
            return rank, world
    return 0, 1


def _init_distributed() -> bool:
    """Start a gloo/nccl process group when launched with several ranks; return whether we own it.

    torchrun sets ``MASTER_ADDR``/``MASTER_PORT``, and so does ``accelerate launch`` for its MPI ranks; a
    bare single-machine ``mpirun`` does not, so they default to ``127.0.0.1:29500`` when every rank is local.
    """
    rank, world = rank_info()
    if world == 1 and os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ:
        warnings.warn("`accelerate launch --cpu --num_processes N` without `--mpirun_hostfile` starts one process: "
                      "this run uses 1 rank. For N CPU ranks use `accelerate launch --multi_gpu --num_processes N` "
                      "(torchrun's launcher; gloo on CPU) or add `--mpirun_hostfile FILE` (needs mpirun).",
                      stacklevel=2)
    if world > 1 and torch.distributed.is_available() and not torch.distributed.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            local = next((int(os.environ[v]) for v in _LOCAL_SIZE_ENV if os.environ.get(v, "").strip()), None)
            if local != world:
                where = "not all on this machine" if local is not None else "perhaps not all on this machine"
                raise ValueError(f"{world} ranks ({where}) need `MASTER_ADDR` (rank 0's host) in the environment; "
                                 "the launcher did not set it")
            os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ.setdefault("MASTER_PORT", "29500")
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("CFX_BACKEND") != "gloo" else "gloo"
        if backend == "nccl":  # one GPU per local rank, before the group binds to the current device
            torch.cuda.set_device(local_device("cuda"))
        torch.distributed.init_process_group(backend, rank=rank, world_size=world)
        return True
    return False


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


# ----------------------------------------------------------------------------- one writer per folder
LOCK_NAME = ".captum-cfx.lock"


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (``/proc``), or ``None`` when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None if Path("/proc").is_dir() else "?"  # without /proc, trust os.kill below
    return None if fields[0] in ("Z", "X") else fields[19]


def _owner_alive(info: dict[str, Any]) -> bool:
    import socket

    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("host") != socket.gethostname():
        return isinstance(pid, int)  # another machine's run: we cannot tell, so it holds the folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = _proc_start(pid)
    return start is not None and (start == "?" or info.get("start") in (None, start))


def acquire_lock(out: Path) -> Path:
    """Create ``out/.captum-cfx.lock`` atomically (``O_CREAT | O_EXCL``) holding this process's PID, host and
    start time. A lock whose owner is gone (killed, crashed) is stale and taken over; a live owner's refuses.
    """
    import socket

    path = out / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _proc_start(os.getpid())}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                info = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                info = {}
            if not isinstance(info, dict):
                info = {}
            if info and _owner_alive(info):
                raise ValueError(f"`out` {str(out)!r} is in use by another run (pid {info.get('pid')} on "
                                 f"{info.get('host')}; lock file {str(path)!r}); wait for it to finish or use "
                                 "another folder (delete the lock file only if no such run exists)") from None
            if not info and time.time() - path.stat().st_mtime < 5:
                time.sleep(0.2)  # being written by a process that has just created it
                continue
            path.unlink(missing_ok=True)  # stale: its owner is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path
    raise ValueError(f"`out` {str(out)!r}: could not take the lock file {str(path)!r}")


def release_lock(path: Path) -> None:
    """Remove a lock file taken by this process (never another's)."""
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, json.JSONDecodeError, AttributeError):
        pass


def _agree(error: str | None) -> None:
    """Rank 0's verdict on the run's checks, raised on every rank (so no rank waits on a barrier forever)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [error]
        torch.distributed.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise ValueError(error)


# ----------------------------------------------------------------------------- the run
TASKS = ("classification", "regression")
REGRESSION_MODES = ("absolute", "relative", "mirror")


@dataclass
class RunConfig:
    """What decides a run's bits; a resumed run must match the folder's ``run.json``.

    Classification runs (the default) pick target classes with ``target`` (``random``, ``next`` or a class
    index) among the model's K classes. Regression runs (``task="regression"``) reach a goal value with
    :class:`~captum_cfx.objectives.RegressionTarget`: ``regression_mode`` ``"mirror"`` (``target`` unused),
    ``"absolute"`` (``target`` is the value to reach) or ``"relative"`` (``target`` is the change), within
    ``tolerance``, for a regressor whose known output range is ``output_range``.
    """

    data: str
    shard_size: int = 100
    seed: int = 0
    target: str = "random"
    margin: float = 6.25
    max_steps: int = 500
    limit: int | None = None
    #: intra-op threads per rank while computing a shard. CPU kernels round differently with different
    #: thread counts, so this is part of what fixes the bits (1 = identical under any number of ranks).
    threads: int = 1
    #: ``"classification"`` or ``"regression"``
    task: str = "classification"
    regression_mode: str = "mirror"
    tolerance: float = 0.05
    output_range: tuple[float, float] | None = (0.0, 1.0)
    #: a folder's labels CSV (``None``: ``<folder>/labels.csv`` when it exists)
    labels: str | None = None
    #: the range a folder's pixels are mapped to (``None``: ``[0, 1]``)
    pixel_range: tuple[float, float] | None = None
    #: refilling (continuous batching): at most this many images in flight; finished ones are replaced by
    #: waiting ones of the same group of shards (``None``: each group is one batch, compacted as it finishes)
    max_batch: int | None = None
    #: consecutive shards searched together as one refilling group, the unit of work of a rank: a group's
    #: bits depend only on its own shards, so a group killed half-written is recomputed whole on resume
    group_shards: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values; fields added after the first release are left out at their defaults, so a
        classification run's ``run.json`` is the same as before they existed (and such runs still resume)."""
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}
        if self.task == "classification":
            for k in ("task", "regression_mode", "tolerance", "output_range"):
                d.pop(k)
        for k in ("labels", "pixel_range", "max_batch"):
            if d[k] is None:
                d.pop(k)
        if d["group_shards"] == 1:
            d.pop("group_shards")
        return d

    def check(self) -> RunConfig:
        """Raise a clear error for a value no run can use (before anything is read or written)."""
        if not isinstance(self.data, str) or not self.data:
            raise TypeError(f"`data` must be a non-empty str; got {self.data!r}")
        check_float(self.shard_size, "shard_size", low=1, integer=True)
        check_float(self.seed, "seed", low=0, integer=True)
        check_float(self.margin, "margin", low=0)
        check_float(self.max_steps, "max_steps", low=1, integer=True)
        check_float(self.threads, "threads", low=1, integer=True)
        if self.limit is not None:
            check_float(self.limit, "limit", low=1, integer=True)
        if self.max_batch is not None:
            check_float(self.max_batch, "max_batch", low=1, integer=True)
        check_float(self.group_shards, "group_shards", low=1, integer=True)
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}; got {self.task!r}")
        for name in ("output_range", "pixel_range"):
            r = getattr(self, name)
            if r is not None:
                ok = (isinstance(r, (tuple, list)) and len(r) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in r)
                    and r[0] < r[1])
                if not ok:
                    raise ValueError(f"`{name}` must be (lo, hi) with finite lo < hi; got {r!r}")
                setattr(self, name, (float(r[0]), float(r[1])))
        if self.task == "regression":
            if self.regression_mode not in REGRESSION_MODES:
                raise ValueError(f"`regression_mode` must be one of {REGRESSION_MODES}; got {self.regression_mode!r}")
            check_float(self.tolerance, "tolerance", low=0, low_open=True)
            if self.regression_mode != "mirror":
                self.regression_goal()
        return self

    def regression_goal(self) -> float | None:
        """``target`` as the number a regression run reaches (absolute) or adds (relative); ``None`` for mirror."""
        if self.regression_mode == "mirror":
            return None
        try:
            value = float(self.target)
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value):
            what = "value to reach" if self.regression_mode == "absolute" else "change to make"
            raise ValueError(f"`target` of a regression run in {self.regression_mode!r} mode must be a finite "
                             f"number (the {what}); got {self.target!r}")
        return value


ShardFn = Callable[[Tensor, Tensor, int], dict[str, Tensor]]


def _compute_group(compute: ShardFn, items: list[tuple[Tensor, Tensor, int]],
                   grouped: bool) -> list[dict[str, Tensor]]:
    """Results of the shards of one group: ``compute.many(items)`` when groups are on and the function has it
    (one refilling search over the group, see :func:`make_explain_fn`), else shard by shard."""
    many = getattr(compute, "many", None)
    if many is None or not grouped:
        return [compute(*item) for item in items]
    return many(items)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_paths(out: Path, k: int) -> tuple[Path, Path]:
    return out / f"shard_{k:05d}.safetensors", out / f"shard_{k:05d}.json"


def shard_done(out: Path, k: int) -> bool:
    """A shard is done when its sidecar exists and names the data file's digest."""
    data, side = shard_paths(out, k)
    if not (data.is_file() and side.is_file()):
        return False
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    return isinstance(meta, dict) and meta.get("sha256") == _digest(data)


def run_sharded(cfg: RunConfig, out_dir: str | Path, compute: ShardFn, resume: bool = False,
                *, progress: bool = True, image_shape: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """Compute every shard this rank owns (skipping done ones on ``resume``), then merge on rank 0.

    Args:
        cfg: the run configuration (fixes shard boundaries and seeds).
        out_dir: the run folder.
        compute: ``compute(images, labels, shard_seed) -> dict of per-sample tensors``.
        resume: skip shards that are complete; refuse a folder made with another configuration.
        image_shape: how a folder's images are read (see :func:`open_data`).

    Returns:
        On rank 0 the merged summary; on other ranks ``{}``.
    """
    cfg.check()
    own_group = _init_distributed()
    lock: Path | None = None
    try:
        rank, world = rank_info()
        out = Path(out_dir)
        src = open_data(cfg.data, image_shape, labels=cfg.labels, pixel_range=cfg.pixel_range)  # checks first
        n = len(src) if cfg.limit is None else min(len(src), cfg.limit)
        if n == 0:
            raise ValueError(f"`data` {cfg.data!r} holds no images")
        n_shards = (n + cfg.shard_size - 1) // cfg.shard_size
        error = None
        if rank == 0:
            try:
                lock = _prepare_out(out, cfg, n_shards, resume)
            except (ValueError, OSError) as e:
                error = str(e) if isinstance(e, ValueError) else f"`out` {str(out)!r}: cannot write there ({e})"
        _agree(error)
        out.mkdir(parents=True, exist_ok=True)  # rank 0 made it; the others make sure (checks have passed)
        g = cfg.group_shards
        groups = [list(range(lo, min(lo + g, n_shards))) for lo in range(0, n_shards, g)]
        mine = [grp for i, grp in enumerate(groups) if i % world == rank]
        todo = [grp for grp in mine if not (resume and all(shard_done(out, k) for k in grp))]
        n_mine = sum(len(grp) for grp in mine)
        bar = tqdm(total=n_mine, initial=n_mine - sum(len(grp) for grp in todo), disable=not progress or rank != 0,
                   desc=f"shards (rank {rank}/{world})")
        threads = torch.get_num_threads()
        for grp in todo:
            bounds = [(k * cfg.shard_size, min((k + 1) * cfg.shard_size, n)) for k in grp]
            loaded = [src.get(lo, hi) for lo, hi in bounds]
            t0 = time.perf_counter()
            torch.set_num_threads(cfg.threads)
            try:  # a half-written group is recomputed whole: its shards' bits depend on the whole group
                results = _compute_group(compute, [(x, y, cfg.seed + k) for k, (x, y, _) in zip(grp, loaded)], g > 1)
            finally:
                torch.set_num_threads(threads)
            seconds = (time.perf_counter() - t0) / len(grp)
            for k, (lo, hi), (_, _, problems), res in zip(grp, bounds, loaded, results):
                problems += _row_problems(res.pop("_problems", []), lo, problems)
                if resume and shard_done(out, k):  # written before the kill, with the same bits
                    continue
                res["index"] = torch.arange(lo, hi)
                data, side = shard_paths(out, k)
                save_safetensors_atomic(res, data)
                write_json_atomic(side, {"shard": k, "start": lo, "stop": hi, "sha256": _digest(data),
                                         "seconds": seconds, "rank": rank, "problems": problems,
                                         "summary": shard_summary(res)})
                bar.update(1)
            del loaded, results  # else this group's images and results stay alive through the next group's loading
        bar.close()
        _barrier()
        if rank != 0:
            return {}
        return merge(out, n_shards)
    finally:
        if lock is not None:
            release_lock(lock)
        if own_group:
            torch.distributed.destroy_process_group()


def _prepare_out(out: Path, cfg: RunConfig, n_shards: int, resume: bool) -> Path:
    """Rank 0: create ``out``, take its lock, check it against ``run.json``, then write ``run.json``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` {str(out)!r} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"`out` {str(out)!r} is not writable")
    lock = acquire_lock(out)
    try:
        run_json = out / "run.json"
        done = [k for k in range(n_shards) if shard_done(out, k)]
        if run_json.is_file() and (done or any(out.glob("shard_*.json"))):
            try:
                prev = json.loads(run_json.read_text())
            except json.JSONDecodeError:
                prev = None
            if prev != cfg.to_dict():
                if not resume:
                    raise ValueError(f"`out` {str(out)!r} holds a run with another configuration; use another folder")
                raise ValueError(f"cannot resume: `out` was made with {prev}, not {cfg.to_dict()}")
            if not resume and done:
                raise ValueError(f"`out` {str(out)!r} already holds results; pass resume to continue it")
        write_json_atomic(run_json, cfg.to_dict())  # a folder without results takes the new configuration
        for stale in out.glob(".*.tmp"):  # half-written files of a killed run (the lock says none is running)
            stale.unlink()
    except BaseException:
        release_lock(lock)
        raise
    return lock


def _row_problems(found: list[tuple[int, str]], lo: int, reported: list[str]) -> list[str]:
    """``row <index>: <problem>`` for the rows ``compute`` skipped, unless the data source reported them."""
    import re

    seen = {int(m.group(1)) for p in reported if (m := re.match(r"row (\d+):", p))}
    return [f"row {lo + int(i)}: {msg}" for i, msg in found if lo + int(i) not in seen]


def iter_shards(out: Path, n_shards: int) -> Iterator[dict[str, Tensor]]:
    for k in range(n_shards):
        yield load_file(str(shard_paths(out, k)[0]))


def _shard_sums(d: dict[str, Tensor]) -> dict[str, float]:
    """Sums over a shard's valid rows: the counts a summary is made of (merged by adding them up)."""
    valid = d.get("valid", torch.ones(len(d["index"]), dtype=torch.bool))
    sums = {"n": float(len(d["index"])), "n_valid": float(valid.sum())}
    for key in ("success", "oracle_agree", "n_steps"):
        if key in d:
            sums[key] = float(d[key][valid].float().sum())
    if "goals" in d:  # a regression run: distances to the goal and the change made, no class anywhere
        ok = valid & d["success"]
        sums["abs_error"] = float((d["predictions"] - d["goals"])[valid].abs().sum())
        sums["abs_change"] = float((d["predictions"] - d["predictions_before"])[valid].abs().sum())
        sums["abs_change_success"] = float((d["predictions"] - d["predictions_before"])[ok].abs().sum())
    return sums


def _summarise(sums: dict[str, float], regression: bool) -> dict[str, Any]:
    nv = max(sums.get("n_valid", 0.0), 1.0)

    def mean(key: str) -> float:
        return sums[key] / nv if key in sums else float("nan")

    out: dict[str, Any] = {"n": int(sums.get("n", 0)), "n_valid": int(sums.get("n_valid", 0))}
    if regression:
        out.update(task="regression", success_rate=mean("success"), mean_abs_error_to_goal=mean("abs_error"),
                   mean_abs_change=mean("abs_change"),
                   mean_abs_change_success=sums.get("abs_change_success", 0.0) / max(sums.get("success", 0.0), 1.0)
                   if sums.get("success") else float("nan"))
    else:
        out.update(task="classification", flip_rate=mean("success"), oracle_agreement=mean("oracle_agree"))
    out["mean_steps"] = mean("n_steps")
    return out


def shard_summary(res: dict[str, Tensor]) -> dict[str, Any]:
    """One shard's summary (in its ``shard_XXXXX.json``): the same keys as ``summary.json`` over its rows."""
    d = {k: v for k, v in res.items() if isinstance(v, Tensor)}
    d.setdefault("index", torch.zeros(len(next(iter(d.values()))) if d else 0))
    return _summarise(_shard_sums(d), "goals" in d)


def merge(out: Path, n_shards: int) -> dict[str, Any]:
    """Check every shard, write ``manifest.json`` and ``summary.json``; return the summary.

    A classification run's summary has ``flip_rate``, ``oracle_agreement`` and ``mean_steps``; a regression run's
    (shards holding ``goals``) ``success_rate`` (within tolerance of the goal), ``mean_abs_error_to_goal``,
    ``mean_abs_change`` (of the prediction, all valid rows) and ``mean_abs_change_success``; both have ``n``,
    ``n_valid``, ``n_shards``, ``seconds_in_shards`` and ``problems``."""
    missing = [k for k in range(n_shards) if not shard_done(out, k)]
    if missing:
        raise ValueError(f"cannot merge: shards {missing[:10]} are missing or incomplete in {str(out)!r}")
    sides = [json.loads(shard_paths(out, k)[1].read_text()) for k in range(n_shards)]
    totals: dict[str, float] = {}
    regression = False
    for d in iter_shards(out, n_shards):
        regression |= "goals" in d
        for key, v in _shard_sums(d).items():
            totals[key] = totals.get(key, 0.0) + v
    summary = _summarise(totals, regression)
    summary.update(n_shards=n_shards, seconds_in_shards=sum(s["seconds"] for s in sides),
                   problems=[p for s in sides for p in s["problems"]])
    write_json_atomic(out / "manifest.json", {"n_shards": n_shards, "shards": sides})
    write_json_atomic(out / "summary.json", summary)
    return summary


def make_explain_fn(model: Callable[[Tensor], Tensor], generator: Any, oracle: Callable[[Tensor], Tensor] | None,
                    cfg: RunConfig, *, device: torch.device | str = "cpu") -> ShardFn:
    """The per-shard job of ``captum-cfx explain --data``: validate, pick seeded targets, attack, judge.

    Images that could not be read (NaN) or fail the generator's checks are marked ``valid = False``
    and skipped; the rest of the shard is computed normally. A classification run (``cfg.task``) stores
    target and predicted classes (and ``oracle_agree`` with an oracle); a regression run stores
    ``predictions_before``, ``goals`` and ``predictions`` (the regressor's values; no argmax anywhere).
    The returned function has a ``many`` that searches the shards of a group (``cfg.group_shards``) in one
    search, refilling ``cfg.max_batch`` slots across them.
    """
    from captum_cfx import LatentCounterfactualAttack

    attack = _GroupAttack(LatentCounterfactualAttack(model, generator), cfg.max_batch)
    device = torch.device(device)
    regression = cfg.task == "regression"

    def compute(x: Tensor, y: Tensor, seed: int) -> dict[str, Any]:
        n = len(x)
        valid, problems = _valid_rows(x, generator)
        xv = x[valid].to(device)
        with torch.no_grad():
            out0 = model(xv) if len(xv) else None
        if regression:
            full, xv = _regression_shard(attack, cfg, x, y, valid, xv, out0)
        else:
            full, xv, tgt, more = _classification_shard(attack, cfg, x, y, valid, xv, out0, seed)
            problems += more
            valid = full["valid"]  # rows whose label is no class of the model were dropped too
            if oracle is not None:
                agree = torch.zeros(n, dtype=torch.bool)
                with torch.no_grad():
                    if len(xv):
                        ok = full["success"][valid]
                        agree[valid] = (oracle(full["counterfactuals"][valid].to(device)).argmax(1).cpu() == tgt) & ok
                full["oracle_agree"] = agree
        full["_problems"] = sorted(problems)  # type: ignore[assignment]  # popped by run_sharded, never saved
        return full

    def many(items: list[tuple[Tensor, Tensor, int]]) -> list[dict[str, Any]]:
        """The shards of a group: each shard's search is collected, the group searched once (refilling), and
        each shard assembled from its rows of that search."""
        searches = []
        for item in items:  # what each shard would search (its images and targets), nothing computed yet
            with attack.collecting() as found:
                compute(*item)
            searches += found
        attack.search_all(searches)
        return [compute(*item) for item in items]  # each shard takes its precomputed search, in order

    compute.many = many  # type: ignore[attr-defined]
    return compute


class _Collected(Exception):
    """Stops a shard's compute at its search (``_GroupAttack.collecting``)."""


class _GroupAttack:
    """The attack as a shard's compute sees it: ``generate`` searches (with refilling at ``max_batch``), or
    records the shard's search (``collecting``), or returns the shard's rows of the group's one search."""

    def __init__(self, attack: Any, max_batch: int | None) -> None:
        self.attack, self.max_batch = attack, max_batch
        self.found: list[tuple[Tensor, dict[str, Any]]] | None = None
        self.ready: list[Any] = []

    @contextmanager
    def collecting(self) -> Iterator[list[tuple[Tensor, dict[str, Any]]]]:
        self.found = []
        try:
            yield self.found
        except _Collected:
            pass
        finally:
            self.found = None

    def generate(self, xv: Tensor, **kwargs: Any) -> Any:
        if self.found is not None:
            self.found.append((xv, kwargs))
            raise _Collected
        if self.ready:
            return self.ready.pop(0)
        return self.attack.generate(xv, max_batch=self.max_batch, **kwargs)

    def search_all(self, searches: list[tuple[Tensor, dict[str, Any]]]) -> None:
        """One search over every shard's images (the targets concatenated; the other settings are the run's,
        the same for every shard), split back into one output per shard."""
        kw = dict(searches[0][1])
        targets = [s[1].get("target") for s in searches]
        if all(isinstance(t, Tensor) and t.dim() == 1 for t in targets):
            kw["target"] = torch.cat(targets)
        elif any(t is not targets[0] for t in targets):
            self.ready = [self.attack.generate(xv, max_batch=self.max_batch, **k) for xv, k in searches]
            return
        out = self.attack.generate(torch.cat([xv for xv, _ in searches]), max_batch=self.max_batch, **kw)
        self.ready, lo = [], 0
        for xv, _ in searches:
            self.ready.append(_rows(out, lo, lo + len(xv)))
            lo += len(xv)


def _rows(out: Any, lo: int, hi: int) -> Any:
    """Rows ``lo:hi`` of a counterfactual output (every per-sample field; the run's statistics as they are)."""
    changes = {}
    for f in dataclasses.fields(out):
        v = getattr(out, f.name)
        if isinstance(v, Tensor) or hasattr(v, "free"):
            changes[f.name] = v[lo:hi]
    return dataclasses.replace(out, **changes)


def _valid_rows(x: Tensor, generator: Any) -> tuple[Tensor, list[tuple[int, str]]]:
    """Rows that are finite and inside the generator's input range, and a problem for each other row."""
    n = len(x)
    problems: list[tuple[int, str]] = []
    valid = torch.isfinite(x.flatten(1)).all(1) if n else torch.zeros(0, dtype=torch.bool)
    problems += [(i, "non-finite values (NaN or Inf)") for i in (~valid).nonzero().flatten().tolist()]
    if generator.input_range is not None and n:
        lo, hi = generator.input_range
        xf = x.flatten(1).nan_to_num(lo)
        mins, maxs = xf.amin(1), xf.amax(1)
        bad = valid & ((mins < lo - 1e-4) | (maxs > hi + 1e-4))
        hint = "; 0-255 images? divide them by 255" if hi <= 1 and float(maxs.max()) > 2 else ""
        problems += [(i, f"values in [{float(mins[i]):.4g}, {float(maxs[i]):.4g}] outside the generator's input "
                         f"range [{lo:g}, {hi:g}]{hint}") for i in bad.nonzero().flatten().tolist()]
        valid &= ~bad
    return valid, problems


def _shard_tensors(x: Tensor, y: Tensor, valid: Tensor, out: Any) -> dict[str, Any]:
    """The per-row tensors every run stores; rows that were skipped keep zeros and ``valid = False``."""
    n = len(x)
    full = {
        "counterfactuals": torch.zeros_like(x),
        "latents": torch.zeros(n, *out.latents.free.shape[1:]),
        "success": torch.zeros(n, dtype=torch.bool),
        "n_steps": torch.zeros(n, dtype=torch.long),
        "labels": y.clone(),
        "valid": valid,
    }
    full["counterfactuals"][valid] = out.counterfactuals.detach().cpu()
    full["latents"][valid] = out.latents.free.detach().cpu()
    full["success"][valid] = out.success.cpu()
    full["n_steps"][valid] = out.n_steps.cpu()
    return full


def _classification_shard(attack: Any, cfg: RunConfig, x: Tensor, y: Tensor, valid: Tensor, xv: Tensor,
                          out0: Tensor | None, seed: int) -> tuple[dict[str, Any], Tensor, Tensor, list]:
    n = len(x)
    problems: list[tuple[int, str]] = []
    if out0 is not None and (out0.dim() != 2 or out0.shape[1] < 2):
        raise ValueError(f"a classification run needs (N, K) logits with K >= 2 from the model; got "
                         f"{tuple(out0.shape)} (a regressor? run it with task='regression')")
    k = int(out0.shape[1]) if out0 is not None else 2  # K classes, read from the model's output
    if y.is_floating_point():  # labels from a CSV or a float array: class indices only when whole numbers
        whole = torch.isfinite(y) & (y == y.round())
        problems += [(i, f"label {float(y[i]):g} is not a class index") for i in (valid & ~whole).nonzero().flatten()
                     .tolist()]
        keep = whole[valid]
        valid = valid & whole
        xv, out0 = xv[keep], (out0[keep] if out0 is not None else None)
        y = torch.where(whole, y, torch.full_like(y, -1.0)).long()
    bad = valid.clone()
    bad[valid] = (y[valid] >= k) | (y[valid] < -1)
    if bool(bad.any()):  # a label that is not one of the model's classes cannot be a source class
        problems += [(i, f"label {int(y[i])} is not a class of the model (0..{k - 1}, or -1 for unknown)")
                     for i in bad.nonzero().flatten().tolist()]
        keep = ~bad[valid]
        valid = valid & ~bad
        xv, out0 = xv[keep], (out0[keep] if out0 is not None else None)
    pred0 = out0.argmax(1).cpu() if out0 is not None and len(xv) else torch.zeros(0, dtype=torch.long)
    ref = torch.where(y[valid] >= 0, y[valid], pred0)
    g = torch.Generator().manual_seed(int(seed))
    offs = torch.randint(1, k, (n,), generator=g)[valid]
    tgt = (ref + offs) % k if cfg.target == "random" else choose_targets(ref, cfg.target, int(seed), k)
    out = attack.generate(xv, target=tgt.to(xv.device), margin=cfg.margin, max_steps=cfg.max_steps)
    full = _shard_tensors(x, y, valid, out)
    full["targets"] = torch.full((n,), -1, dtype=torch.long)
    full["predictions"] = torch.full((n,), -1, dtype=torch.long)
    full["targets"][valid] = tgt.cpu()
    full["predictions"][valid] = out.predictions.argmax(1).cpu()
    return full, xv, tgt.cpu(), problems


def _regression_shard(attack: Any, cfg: RunConfig, x: Tensor, y: Tensor, valid: Tensor, xv: Tensor,
                      out0: Tensor | None) -> tuple[dict[str, Any], Tensor]:
    from captum_cfx.objectives import RegressionTarget

    n = len(x)
    obj = RegressionTarget(tolerance=cfg.tolerance, mode=cfg.regression_mode, value_range=cfg.output_range)
    if out0 is not None:
        RegressionTarget._values(out0)  # (N,) or (N, 1), else a clear error before the search
    with warnings.catch_warnings():  # goals outside output_range are counted in the summary, not warned per shard
        warnings.simplefilter("ignore", UserWarning)
        out = attack.generate(xv, target=cfg.regression_goal(), objective=obj, max_steps=cfg.max_steps)
        before = RegressionTarget._values(out0).detach().cpu().float() if out0 is not None else torch.zeros(0)
        goal = obj.prepare(before, cfg.regression_goal()) if len(before) else torch.zeros(0)
    full = _shard_tensors(x, y.float() if y.is_floating_point() else y.float().masked_fill(y < 0, float("nan")),
                          valid, out)
    after = RegressionTarget._values(out.predictions).detach().cpu().float()
    for key, v in (("predictions_before", before), ("goals", goal), ("predictions", after)):
        full[key] = torch.full((n,), float("nan"))
        full[key][valid] = v
    return full, xv


def write_run_figures(out_dir: str | Path, generator: Any, cfg: RunConfig, max_rows: int = 8,
                      *, image_shape: tuple[int, int, int] | None = None) -> Path:
    """The merge step's figure: a counterfactual grid of the first valid images of shard 0."""
    import matplotlib.pyplot as plt

    from captum_cfx.visualization import counterfactual_grid

    out = Path(out_dir)
    d = load_file(str(shard_paths(out, 0)[0]))
    valid = d["valid"] if "valid" in d else torch.ones(len(d["index"]), dtype=torch.bool)
    rows = valid.nonzero().flatten()[:max_rows]
    x, _, _ = open_data(cfg.data, image_shape, labels=cfg.labels, pixel_range=cfg.pixel_range).get(0, len(valid))
    x = x[rows]
    with torch.no_grad():
        dev = generator.device
        recon = generator.reconstruct(x.to(dev)).cpu()
    cf = d["counterfactuals"][rows]
    if "goals" in d:  # regression: the prediction before -> the goal
        labels = [f"{float(d['predictions_before'][i]):.2f}→{float(d['goals'][i]):.2f}" for i in rows]
    else:
        labels = [f"{int(d['labels'][i])}→{int(d['targets'][i])}" for i in rows] if "targets" in d else None
    fig = counterfactual_grid(x, recon, cf, cf - recon, row_labels=labels, max_rows=max_rows)
    path = out / "grid.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
