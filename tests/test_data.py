"""Finding and reading MNIST: the accepted folder layouts, md5 checks, the IDX decoder, the splits."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from harness.errors import DataError
from harness.training.data import to_device
from harness.training.images import MNIST_MD5, find_mnist, load_mnist, read_idx

# From the data folder's README: label counts of digits 0..9
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("layout", ["", "raw", "MNIST/raw"])
def test_accepted_layouts(tmp_path, data_dir, layout):
    inner = tmp_path / layout
    inner.mkdir(parents=True, exist_ok=True)
    for name in MNIST_MD5:
        (inner / name).symlink_to(data_dir / name)
    assert find_mnist(tmp_path) == inner


def test_missing_file_is_named(tmp_path, data_dir):
    for name in list(MNIST_MD5)[:3]:
        (tmp_path / name).symlink_to(data_dir / name)
    with pytest.raises(DataError, match="lacks the MNIST files"):
        find_mnist(tmp_path)


def test_wrong_bytes_fail_the_md5(tmp_path, data_dir):
    for name in MNIST_MD5:
        (tmp_path / name).symlink_to(data_dir / name)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(10008)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is corrupt"):
        find_mnist(tmp_path)


def test_idx_decoder_on_a_written_fixture(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in images.shape)
    (tmp_path / "x.gz").write_bytes(gzip.compress(header + images.tobytes()))
    assert np.array_equal(read_idx(tmp_path / "x.gz"), images)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + (4).to_bytes(4, "big") + bytes(16)))
    with pytest.raises(DataError, match="not a uint8 IDX"):
        read_idx(tmp_path / "bad.gz")


def test_real_mnist_and_the_held_out_split(data_dir):
    arrays = load_mnist(find_mnist(data_dir))
    assert arrays.train_images.shape == (60_000, 28, 28) and arrays.test_images.shape == (10_000, 28, 28)
    assert np.bincount(arrays.train_labels).tolist() == TRAIN_COUNTS
    assert np.bincount(arrays.test_labels).tolist() == TEST_COUNTS
    splits = to_device(arrays, 5000, torch.device("cpu"))
    assert splits.train_x.shape == (55_000, 784) and splits.val_x.shape == (5000, 784)
    assert 0.0 == splits.train_x.min() and splits.train_x.max() == 1.0
    # validation is the first 5,000 training images (TF's split), disjoint from what is trained on
    assert torch.equal(splits.val_y, torch.from_numpy(arrays.train_labels[:5000].astype(np.int64)))
    assert torch.equal(splits.train_y, torch.from_numpy(arrays.train_labels[5000:].astype(np.int64)))


def test_the_validation_split_is_a_choice(data_dir):
    """data.val_split: the first, the last or a random 5,000 (seeded); always disjoint from training,
    together every training image once."""
    arrays = load_mnist(find_mnist(data_dir))
    labels = torch.from_numpy(arrays.train_labels.astype(np.int64))
    last = to_device(arrays, 5000, torch.device("cpu"), "last")
    assert torch.equal(last.val_y, labels[-5000:]) and torch.equal(last.train_y, labels[:-5000])
    random = to_device(arrays, 5000, torch.device("cpu"), "random", 7)
    again = to_device(arrays, 5000, torch.device("cpu"), "random", 7)
    other = to_device(arrays, 5000, torch.device("cpu"), "random", 8)
    assert torch.equal(random.val_x, again.val_x) and not torch.equal(random.val_x, other.val_x)
    assert random.val_x.shape == (5000, 784) and random.train_x.shape == (55_000, 784)
    pixels = torch.cat([random.val_x, random.train_x]).sum(1)  # every image once: the same multiset of sums
    assert torch.equal(pixels.sort().values, torch.cat([last.val_x, last.train_x]).sum(1).sort().values)
    rows = lambda x: {bytes(r.numpy().tobytes()) for r in x}  # noqa: E731
    assert len(rows(random.val_x) & rows(random.train_x)) < 10  # disjoint (MNIST repeats a few images)


def test_the_default_split_keeps_every_cell_id():
    from harness.config import CellSettings
    from harness.plan import cell_id

    base = CellSettings()
    assert cell_id(CellSettings(data={"val_split": "first"}), []) == cell_id(base, [])
    assert cell_id(CellSettings(data={"val_split": "last"}), []) != cell_id(base, [])
    assert cell_id(CellSettings(data={"val_split": "random", "split_seed": 1}), []) != \
        cell_id(CellSettings(data={"val_split": "random"}), [])


def test_without_a_data_folder_it_downloads_or_says_how_to_work_offline(tmp_path):
    """No --data-dir and no $HARNESS_DATA_DIR: torchvision downloads into the cache. Offline (CI),
    that fails, and the user gets one line naming the option and the variable, exit 2."""
    from conftest import SMALL, harness, write_config

    config = write_config(tmp_path,
                          {**SMALL, "sweep": {"train.batch_size": [256]}, "train": {**SMALL["train"], "epochs": 1}})
    proc = harness("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--no-report",
                   env={"HARNESS_DATA_DIR": "", "XDG_CACHE_HOME": str(tmp_path / "cache")})
    if proc.returncode == 2:
        assert proc.stderr.count("\n") == 1 and "could not download MNIST" in proc.stderr
        assert "--data-dir" in proc.stderr and "HARNESS_DATA_DIR" in proc.stderr
        assert not list((tmp_path / "r").rglob("result.json"))
    else:
        assert proc.returncode == 0, proc.stderr
        assert find_mnist(tmp_path / "cache" / "harness") == tmp_path / "cache" / "harness" / "MNIST" / "raw"
