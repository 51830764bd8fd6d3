"""The built-in images' files, MNIST and Fashion-MNIST: the four original IDX files (md5-checked),
where they are found, their download and their decoder. No torch here: the commands that only plan
or read results (plan, status, report, --help) use it and start fast.

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

import numpy as np

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
    "mnist": Dataset(name="mnist", title="MNIST",
                     md5=("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
                     decoded=False, folder="mnist", torchvision="MNIST"),
    # the decoded md5s: Debian's copy was recompressed, a torchvision download is not; both decode alike
    "fashion_mnist": Dataset(name="fashion_mnist", title="Fashion-MNIST",
                             md5=("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
                              "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"),
                             decoded=True, folder="fashion-mnist", torchvision="FashionMNIST"),
}
MNIST_MD5 = dict(zip(FILES, DATASETS["mnist"].md5))


def resolve_data_dir(option: str | None) -> Path | None:
    """The folder the user named (option beats environment), or None to download."""
    chosen = option or os.environ.get(DATA_DIR_ENV)
    return Path(chosen).expanduser() if chosen else None


def data_folders(datasets: set[str | None], option: str | Path | None) -> dict[str, Path] | None:
    """Each built-in image set named, found and md5-checked now (before any training); None when
    no folder is named (option, else $HARNESS_DATA_DIR), to download."""
    data_dir = resolve_data_dir(str(option) if option else None)
    if data_dir is None:
        return None
    return {name: find_dataset(name, data_dir) for name in sorted(datasets - {None})}


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
                    f"looked in raw/, {data.torchvision}/raw/, {data.folder}/ and ../{data.folder}/); copy them there "
                    f"or unset it to download")


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
            return (f"{folder / name} is corrupt or not {data.title} ({kind} {digest}, expected {expected}); "
                    f"replace the file")
    return None


def download(root: Path, name: str = "mnist") -> Path:
    """torchvision fetches and checks the files; we read its raw folder ourselves."""
    import torchvision.datasets

    data = DATASETS[name]
    try:
        for train in (True, False):
            getattr(torchvision.datasets, data.torchvision)(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - torchvision raises plain RuntimeError/URLError on network failure
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


