"""MNIST and Fashion-MNIST from their four original IDX files (md5-checked), held on the training device.

Where the files come from, in order: --data-dir, $HARNESS_DATA_DIR, else a torchvision download
into the cache folder. The folder may hold the four .gz files itself, torchvision's layout
(MNIST/raw, FashionMNIST/raw), or one subfolder per dataset (mnist/, fashion-mnist/); a folder that
holds one dataset also finds the other beside it (../fashion-mnist next to .../mnist).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import DataError

DATA_DIR_ENV = "HARNESS_DATA_DIR"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness"
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class Dataset:
    name: str  # as in the config: data.dataset
    title: str
    md5: tuple[str, ...]  # per file of FILES
    decoded: bool  # md5 of the decoded bytes: the .gz of some copies were recompressed
    folder: str  # its subfolder in a folder of datasets, and in torchvision's layout
    torchvision: str


DATASETS = {
    "mnist": Dataset("mnist", "MNIST", ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
                     False, "mnist", "MNIST"),
    # the decoded md5s: Debian's copy was recompressed, a torchvision download is not; both decode alike
    "fashion_mnist": Dataset("fashion_mnist", "Fashion-MNIST",
                             ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
                              "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"),
                             True, "fashion-mnist", "FashionMNIST"),
}
MNIST_MD5 = dict(zip(FILES, DATASETS["mnist"].md5))


def resolve_data_dir(option: str | None) -> Path | None:
    """The folder the user named (option beats environment), or None to download."""
    chosen = option or os.environ.get(DATA_DIR_ENV)
    return Path(chosen).expanduser() if chosen else None


def find_dataset(name: str, folder: Path) -> Path:
    """The folder at or near `folder` that holds the dataset's four files, each with the right md5.
    A folder with the four files but other contents (the other dataset) is passed over; if no
    candidate verifies, the first mismatch is the error."""
    data = DATASETS[name]
    if not folder.is_dir():
        raise DataError(f"--data-dir / ${DATA_DIR_ENV}: {folder} is not a folder; point it at the four {data.title} "
                        f".gz files")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataError(f"--data-dir / ${DATA_DIR_ENV}: cannot read the folder {folder} (permission denied); fix its "
                        f"permissions or point elsewhere")
    candidates = (folder, folder / "raw", folder / data.torchvision / "raw", folder / data.folder,
                  folder.parent / data.folder)
    mismatch = None
    for candidate in dict.fromkeys(candidates):
        if all((candidate / f).is_file() for f in FILES):
            wrong = _mismatch(data, candidate)
            if wrong is None:
                return candidate
            mismatch = mismatch or wrong
    if mismatch:
        raise DataError(mismatch)
    raise DataError(f"--data-dir / ${DATA_DIR_ENV}: {folder} lacks the {data.title} files {', '.join(FILES)} (also "
                    f"looked in raw/, {data.torchvision}/raw/, {data.folder}/ and ../{data.folder}/); copy them there or "
                    f"unset it to download")


def find_mnist(folder: Path) -> Path:
    return find_dataset("mnist", folder)


def _mismatch(data: Dataset, folder: Path) -> str | None:
    """None when every file has the dataset's md5, else one line naming the first that does not."""
    for name, expected in zip(FILES, data.md5):
        try:
            raw = (folder / name).read_bytes()
            digest = hashlib.md5(gzip.decompress(raw) if data.decoded else raw).hexdigest()
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            return f"{folder / name} cannot be read as {data.title} ({exc}); replace the file"
        if digest != expected:
            kind = "decoded md5" if data.decoded else "md5"
            return f"{folder / name} is corrupt or not {data.title} ({kind} {digest}, expected {expected}); replace the file"
    return None


def download(root: Path, name: str = "mnist") -> Path:
    """torchvision fetches and checks the files; we read its raw folder ourselves."""
    import torchvision.datasets

    data = DATASETS[name]
    try:
        for train in (True, False):
            getattr(torchvision.datasets, data.torchvision)(str(root), train=train, download=True)
    except Exception as exc:  # torchvision raises plain RuntimeError/URLError on network failure
        reason = " ".join(str(exc).split())[:300]  # torchvision's message spans lines; ours is one
        raise DataError(
            f"could not download {data.title} into {root} ({type(exc).__name__}: {reason}); "
            f"offline, pass --data-dir or set ${DATA_DIR_ENV} to a folder with the four .gz files"
        ) from None
    return find_dataset(name, root)


def read_idx(path: Path) -> np.ndarray:
    """The IDX format: magic (2 zero bytes, dtype 0x08=uint8, ndim), big-endian dims, data."""
    with gzip.open(path, "rb") as fh:
        blob = fh.read()
    if blob[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not a uint8 IDX file; replace it with the original MNIST file")
    ndim = blob[3]
    shape = tuple(int.from_bytes(blob[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@dataclass(frozen=True)
class MnistArrays:
    train_images: np.ndarray  # uint8 (60000, 28, 28)
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_mnist(folder: Path) -> MnistArrays:
    """The four IDX files of MNIST or Fashion-MNIST (same names, format and sizes)."""
    return MnistArrays(*(read_idx(folder / name) for name in FILES))


@dataclass(frozen=True)
class Splits:
    """Flattened images scaled to [0, 1] and int64 labels, all on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def nbytes(self) -> int:
        """Device bytes held (each storage once: the built-in images' train and validation share one)."""
        tensors = (self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y)
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return sum(storages.values())


def to_device(arrays: MnistArrays, val_size: int, device: torch.device) -> Splits:
    """Validation = the first `val_size` training images (TF's read_data_sets), never the test set."""

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(len(a), -1).copy()).to(device).float().div_(255.0)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64)).to(device)

    x, y = images(arrays.train_images), labels(arrays.train_labels)
    return Splits(
        train_x=x[val_size:],
        train_y=y[val_size:],
        val_x=x[:val_size],
        val_y=y[:val_size],
        test_x=images(arrays.test_images),
        test_y=labels(arrays.test_labels),
    )


def own_splits(raw: Any, val_size: int, device: torch.device, where: str) -> Splits:
    """What a workload's load() returned -> Splits on the device. ConfigError naming the key that is
    wrong, or the size that does not fit on the device."""
    if not isinstance(raw, dict) or not {"train", "test"} <= set(raw):
        shape = f"a dict with keys {sorted(map(str, raw))}" if isinstance(raw, dict) else f"a {type(raw).__name__}"
        raise DataError(f"{where} returned {shape}; return {{'train': (x, y), 'test': (x, y)}}, optionally 'val' too")
    unknown = sorted(set(map(str, raw)) - {"train", "val", "test"})
    if unknown:
        raise DataError(f"{where} returned the key(s) {', '.join(unknown)}; only 'train', 'val' and 'test' are read")
    pairs = {key: _pair(raw[key], f"{where} returned {key!r}") for key in ("train", "val", "test") if key in raw}
    if "val" not in pairs:  # held out from the start of the training examples, as for the images
        x, y = pairs["train"]
        if val_size >= len(x):
            raise DataError(f"data.val_size={val_size} leaves none of the workload's {len(x):,} training examples; "
                            f"lower data.val_size or return a 'val' split from load()")
        pairs["val"], pairs["train"] = (x[:val_size], y[:val_size]), (x[val_size:], y[val_size:])
    size = sum(t.element_size() * t.nelement() for pair in pairs.values() for t in pair)
    free = free_bytes(device)
    if free is not None and size > free:
        raise DataError(f"{where}: the data takes {size / 2**30:.2f} GiB and {device} has {free / 2**30:.2f} GiB free; "
                        f"the harness holds the whole dataset on the device: load fewer or smaller examples")
    return Splits(*(t.to(device) for key in ("train", "val", "test") for t in pairs[key]))


def _pair(value: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise DataError(f"{where} as a {type(value).__name__}; each split is a pair (inputs, targets)")
    x, y = (_tensor(v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(x) != len(y) or not len(x):
        raise DataError(f"{where} with {len(x)} inputs and {len(y)} targets; give as many of each, at least one")
    return x, y


def _tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{where} is a {type(value).__name__}; give a torch.Tensor or a numpy array")
    if value.dim() == 0:
        raise DataError(f"{where} is a single number; give one row per example")
    return value.detach()


def free_bytes(device: torch.device) -> int | None:
    """Memory the device has free now: the GPU's (CUDA), else the machine's available RAM."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0]
        import psutil

        return psutil.virtual_memory().available
    except Exception:
        return None


class IndexStream:
    """The global sample order, identical on every rank: each rank slices the same indices.

    shuffle: consecutive batches walk a permutation and continue into a fresh one at its end
    (TF's next_batch); with_replacement: every index is drawn uniformly and independently.
    """

    def __init__(self, size: int, sampling: str, seed: int):
        self.size, self.sampling = size, sampling
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.int64)
        self.cursor = 0

    def state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm, "cursor": self.cursor}

    def restore(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.cursor = state["perm"], state["cursor"]

    def next(self, count: int) -> torch.Tensor:
        if self.sampling == "with_replacement":
            return torch.randint(self.size, (count,), generator=self.generator)
        parts = []
        while count > 0:
            if self.cursor == len(self.perm):
                self.perm, self.cursor = torch.randperm(self.size, generator=self.generator), 0
            take = min(count, len(self.perm) - self.cursor)
            parts.append(self.perm[self.cursor : self.cursor + take])
            self.cursor += take
            count -= take
        return torch.cat(parts)


def rank_slice(batch_size: int, rank: int, world: int) -> slice:
    """This rank's columns of a global batch: each of `world` processes takes batch_size / world."""
    per_rank = batch_size // world
    return slice(rank * per_rank, (rank + 1) * per_rank)
