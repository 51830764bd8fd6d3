"""MNIST from its four original IDX files (md5-checked), held on the training device.

Where the files come from, in order: --data-dir, $HARNESS_DATA_DIR, else a torchvision download
into the cache folder. A folder may hold the four .gz files itself, or torchvision's MNIST/raw.
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

MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def resolve_data_dir(option: str | None) -> Path | None:
    """The folder the user named (option beats environment), or None to download."""
    chosen = option or os.environ.get(DATA_DIR_ENV)
    return Path(chosen).expanduser() if chosen else None


def find_mnist(folder: Path) -> Path:
    """The folder inside `folder` that holds the four files, each with the right md5."""
    if not folder.is_dir():
        raise DataError(f"--data-dir / ${DATA_DIR_ENV}: {folder} is not a folder; point it at the four MNIST .gz files")
    for candidate in (folder, folder / "raw", folder / "MNIST" / "raw"):
        if all((candidate / name).is_file() for name in MNIST_MD5):
            verify(candidate)
            return candidate
    raise DataError(
        f"--data-dir / ${DATA_DIR_ENV}: {folder} lacks the MNIST files {', '.join(MNIST_MD5)} "
        f"(also looked in raw/ and MNIST/raw/); copy them there or unset it to download"
    )


def verify(folder: Path) -> None:
    for name, expected in MNIST_MD5.items():
        digest = hashlib.md5((folder / name).read_bytes()).hexdigest()
        if digest != expected:
            raise DataError(f"{folder / name} is corrupt (md5 {digest}, expected {expected}); replace the file")


def download(root: Path) -> Path:
    """torchvision fetches and md5-checks the files; we read its raw folder ourselves."""
    from torchvision.datasets import MNIST

    try:
        MNIST(str(root), train=True, download=True)
        MNIST(str(root), train=False, download=True)
    except Exception as exc:  # torchvision raises plain RuntimeError/URLError on network failure
        reason = " ".join(str(exc).split())[:300]  # torchvision's message spans lines; ours is one
        raise DataError(
            f"could not download MNIST into {root} ({type(exc).__name__}: {reason}); "
            f"offline, pass --data-dir or set ${DATA_DIR_ENV} to a folder with the four .gz files"
        ) from None
    return find_mnist(root)


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
    return MnistArrays(
        train_images=read_idx(folder / "train-images-idx3-ubyte.gz"),
        train_labels=read_idx(folder / "train-labels-idx1-ubyte.gz"),
        test_images=read_idx(folder / "t10k-images-idx3-ubyte.gz"),
        test_labels=read_idx(folder / "t10k-labels-idx1-ubyte.gz"),
    )


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
        """Device bytes held (train and validation share one tensor)."""
        return sum(t.untyped_storage().nbytes() for t in (self.train_x, self.train_y, self.test_x, self.test_y))


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
