"""revssl.datasets against files in each dataset's exact on-disk format: the resolution order, every kind of damaged
file, missing datasets and downloads, and the digits split. The exact pixels and labels of each reader, Food-101's
cache and the decoding are checked in nbs/03a_datasets.ipynb, next to the code."""
import gzip
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from revssl import datasets as D
from revssl.datasets import DATASETS, DatasetCorrupt, DatasetNotFound, load_dataset
from revssl.testing import make_fake_dataset, write_idx


@pytest.fixture
def iso(tmp_path, monkeypatch):
    "No $REVSSL_DATA, an empty system folder and a private cache: only what the test writes can be found."
    monkeypatch.delenv("REVSSL_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(D, "SYSTEM_DATA_DIRS", [tmp_path / "system"])
    return tmp_path


def test_resolution_order(iso, monkeypatch):
    "explicit root, then $REVSSL_DATA, then system folders, then the cache."
    places = {k: iso / k for k in ("root", "env", "system", "xdg/revssl")}
    data = {k: make_fake_dataset("cifar10", p, n_train=5, n_test=2, seed=i)["test"][0]
            for i, (k, p) in enumerate(places.items())}
    monkeypatch.setenv("REVSSL_DATA", str(places["env"]))
    load = lambda root=None: load_dataset("cifar10", "test", root=root, download=False)[0].numpy()
    np.testing.assert_array_equal(load(places["root"]), data["root"])
    np.testing.assert_array_equal(load(), data["env"])
    monkeypatch.delenv("REVSSL_DATA")
    np.testing.assert_array_equal(load(iso / "nothing-here"), data["system"])
    monkeypatch.setattr(D, "SYSTEM_DATA_DIRS", [])
    np.testing.assert_array_equal(load(), data["xdg/revssl"])


def _damage_fashion(root, how):
    folder = root / "fashion-mnist"
    p = folder / "train-images-idx3-ubyte.gz"
    if how == "truncated gzip": p.write_bytes(p.read_bytes()[:-20])
    elif how == "not gzip": p.write_bytes(b"hello world")
    elif how == "short data": p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-28]))
    elif how == "bad magic": p.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + gzip.decompress(p.read_bytes())[4:]))
    elif how == "count mismatch":
        p = folder / "train-labels-idx1-ubyte.gz"; write_idx(p, np.zeros(3))
    elif how == "label range":
        p = folder / "train-labels-idx1-ubyte.gz"; write_idx(p, np.full(6, 10))
    return p


@pytest.mark.parametrize("how,msg", [("truncated gzip", "cannot read the file"), ("not gzip", "cannot read the file"),
                                     ("short data", "truncated or padded"), ("bad magic", "not an idx file"),
                                     ("count mismatch", "are not images [N, H, W] and labels [N]"),
                                     ("label range", "labels should be in [0, 10)")])
def test_fashion_mnist_damaged(iso, how, msg):
    make_fake_dataset("fashion_mnist", iso, n_train=6, n_test=2)
    p = _damage_fashion(iso, how)
    with pytest.raises(DatasetCorrupt) as e: load_dataset("fashion_mnist", root=iso, download=False)
    assert str(p) in str(e.value) and msg in str(e.value)


class _Evil:
    def __reduce__(self): return (print, ("pwned",))


@pytest.mark.parametrize("how,msg", [
    ("truncated", "cannot unpickle"), ("garbage", "cannot unpickle"),
    ("evil", "refusing to unpickle __builtin__.print: a CIFAR file holds only NumPy arrays"),
    ("not a dict", "expected a pickled dict"), ("data shape", "'data' should be uint8 [N, 3072]"),
    ("no coarse", "no 'coarse_labels' field"), ("label range", "hold 4 labels in [0, 100)"),
    ("label count", "hold 4 labels in [0, 100)"), ("missing file", "missing")])
def test_cifar100_damaged(iso, how, msg):
    make_fake_dataset("cifar100", iso, n_train=4, n_test=2)
    p = iso / "cifar-100-python/train"
    d = pickle.loads(p.read_bytes())
    if how == "truncated": p.write_bytes(p.read_bytes()[:-50])
    elif how == "garbage": p.write_bytes(b"\x00" * 100)
    elif how == "evil": p.write_bytes(pickle.dumps({"data": _Evil()}, protocol=2))
    elif how == "not a dict": p.write_bytes(pickle.dumps([1, 2], protocol=2))
    elif how == "data shape": d["data"] = d["data"].reshape(4, 3, 1024); p.write_bytes(pickle.dumps(d, protocol=2))
    elif how == "no coarse": del d["coarse_labels"]; p.write_bytes(pickle.dumps(d, protocol=2))
    elif how == "label range": d["fine_labels"][0] = 100; p.write_bytes(pickle.dumps(d, protocol=2))
    elif how == "label count": d["fine_labels"] = d["fine_labels"][:3]; p.write_bytes(pickle.dumps(d, protocol=2))
    elif how == "missing file":
        p = iso / "cifar-10-batches-py/data_batch_3"
        make_fake_dataset("cifar10", iso, n_train=10, n_test=2); p.unlink()
        with pytest.raises(DatasetCorrupt) as e: load_dataset("cifar10", root=iso, download=False)
        assert str(p) in str(e.value) and msg in str(e.value)
        return
    with pytest.raises(DatasetCorrupt) as e: load_dataset("cifar100", root=iso, download=False)
    assert str(p) in str(e.value) and msg in str(e.value)


@pytest.mark.parametrize("how,msg", [("truncated", "cannot read the archive"), ("no member", "has no member")])
def test_cifar_tarball_damaged(iso, how, msg):
    make_fake_dataset("cifar10", iso, n_train=5, n_test=2, tarball=True)
    p = iso / "cifar-10-python.tar.gz"
    if how == "truncated": p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])
    else:
        with tarfile.open(p, "w:gz") as tar:
            f = iso / "readme.txt"; f.write_text("x"); tar.add(f, arcname="cifar-10-batches-py/readme.txt")
    with pytest.raises(DatasetCorrupt) as e: load_dataset("cifar10", root=iso, download=False)
    assert str(p) in str(e.value) and msg in str(e.value)


@pytest.mark.parametrize("how,msg", [("truncated jpeg", "cannot decode the image"), ("missing jpeg", "missing"),
                                     ("unknown class", "is not in meta/classes.txt"), ("bad json", "cannot read")])
def test_food101_damaged(iso, how, msg):
    make_fake_dataset("food101", iso, n_train=3, n_test=1)
    folder = iso / "food-101"
    meta = json.loads((folder / "meta/train.json").read_text())
    c = next(iter(meta))
    p = folder / "images" / f"{meta[c][0]}.jpg"
    if how == "truncated jpeg": p.write_bytes(p.read_bytes()[:200])
    elif how == "missing jpeg": p.unlink()
    elif how == "unknown class":
        meta["space_food"] = ["space_food/1"]; p = folder / "meta/train.json"; p.write_text(json.dumps(meta))
    elif how == "bad json": p = folder / "meta/train.json"; p.write_text("{not json")
    with pytest.raises(DatasetCorrupt) as e: load_dataset("food101", root=iso, download=False)
    assert str(p) in str(e.value) and msg in str(e.value)


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "cifar100", "food101"])
def test_missing_dataset_one_clear_error(iso, name, monkeypatch):
    monkeypatch.setenv("REVSSL_DATA", str(iso / "env"))
    with pytest.raises(DatasetNotFound) as e: load_dataset(name, "test", root=iso / "root", download=False)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert f"dataset {name!r} (split 'test') not found" in msg and "not attempted (download=False)" in msg
    assert DATASETS[name].how_to_get in msg
    bases = [iso / "root", iso / "env", iso / "system", iso / "xdg/revssl"]
    for base in bases:
        for place in D._candidates(name, base): assert f"  {place}\n" in msg
    # in the resolution order
    firsts = [msg.index(f"  {D._candidates(name, b)[0]}\n") for b in bases]
    assert firsts == sorted(firsts)


def test_failed_download_is_reported(iso, monkeypatch):
    calls = []
    def offline(name, target, split):
        calls.append((name, target, split)); raise OSError("[Errno -2] Name or service not known")
    monkeypatch.setattr(D, "_download", offline)
    with pytest.raises(DatasetNotFound) as e: load_dataset("cifar100", root=iso / "r", download=True)
    assert calls == [("cifar100", iso / "r", "train")]
    assert f"into {iso / 'r'} failed: OSError: [Errno -2] Name or service not known" in str(e.value)
    with pytest.raises(DatasetNotFound) as e: load_dataset("cifar10", download=True)
    assert calls[-1][1] == iso / "xdg/revssl"  # no root, no $REVSSL_DATA: the cache is the download target


def test_successful_download_is_loaded(iso, monkeypatch):
    monkeypatch.setattr(D, "_download", lambda name, target, split: make_fake_dataset(name, target, 4, 2, seed=9))
    x, y = load_dataset("cifar10", "test", root=iso / "dl", download=True)
    np.testing.assert_array_equal(x.numpy(), make_fake_dataset("cifar10", iso / "again", 4, 2, seed=9)["test"][0])


def test_digits_split():
    x, y = load_dataset("digits")
    xt, yt = load_dataset("digits", "test")
    assert (len(x), len(xt)) == (1347, 450) and x.shape[1:] == (1, 8, 8)
    assert torch.equal(x, load_dataset("digits")[0])  # deterministic
    from sklearn.datasets import load_digits
    d = load_digits()
    allx = np.round(d.images * 255 / 16).astype(np.uint8)
    # train + test is the whole dataset, each image once
    got = sorted(map(bytes, np.concatenate([x[:, 0].numpy(), xt[:, 0].numpy()])))
    assert got == sorted(map(bytes, allx))
    # the documented split: scikit-learn's stratified train_test_split, test_size=0.25, random_state=0
    from sklearn.model_selection import train_test_split
    tr, te = train_test_split(np.arange(len(d.target)), test_size=0.25, stratify=d.target, random_state=0)
    np.testing.assert_array_equal(x[:, 0].numpy(), allx[tr])
    np.testing.assert_array_equal(yt["class"].numpy(), d.target[te])
    # loops / straight / curves
    assert [DATASETS["digits"].superclass_of[d] for d in (0, 6, 8, 9, 1, 4, 7, 2, 3, 5)] == [0] * 4 + [1] * 3 + [2] * 3


FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")