"""dataset_tool.py with stylegan2-ada-pytorch's sources and options: CIFAR-10's tarball, MNIST's
idx files and LSUN's LMDB folders (tiny synthetic files in the real formats), --transform,
--width/--height, --resize-filter; and its refusals of a --dest or size it would get wrong."""

import gzip
import io
import json
import os
import pickle
import stat
import struct
import sys
import tarfile
import zipfile

import numpy as np
import PIL.Image
from click.testing import CliRunner

from test_dataset import error_line, run_tool  # the dataset_tool.py tests there
from training.dataset import ImageFolderDataset


def images_of(path):
    ds = ImageFolderDataset(str(path), use_labels=True)
    return np.stack([ds[i][0] for i in range(len(ds))]), ds


# ---------------------------------------------------------------------------- CIFAR-10


class Py2Pickle:
    """Writes pickles laid out as Python 2's cPickle wrote CIFAR-10's batches (protocol 2, byte
    strings as BINSTRING, arrays through numpy.core.multiarray._reconstruct), so the reader is
    tested on the real format rather than on what Python 3 would write."""

    def dumps(self, obj):
        return b"\x80\x02" + self.encode(obj) + b"."

    def encode(self, obj):
        if isinstance(obj, np.ndarray):
            return self.array(obj)
        if isinstance(obj, dict):
            return b"}(" + b"".join(self.encode(k) + self.encode(v) for k, v in obj.items()) + b"u"
        if isinstance(obj, list):
            return b"](" + b"".join(self.encode(v) for v in obj) + b"e"
        if isinstance(obj, tuple):
            return b"(" + b"".join(self.encode(v) for v in obj) + b"t"
        if obj is None:
            return b"N"
        if isinstance(obj, bool):
            return b"\x89" if not obj else b"\x88"
        if isinstance(obj, int):
            if 0 <= obj < 256:
                return b"K" + bytes([obj])
            return b"J" + struct.pack("<i", obj)
        if isinstance(obj, (str, bytes)):
            data = obj.encode("latin1") if isinstance(obj, str) else obj
            if len(data) < 256:
                return b"U" + bytes([len(data)]) + data
            return b"T" + struct.pack("<I", len(data)) + data
        raise TypeError(type(obj))

    def array(self, a):
        assert a.dtype == np.uint8
        dtype = (b"cnumpy\ndtype\n" + self.encode(("u1", False, True)) + b"R"
                 + self.encode((3, "|", None, None, None, -1, -1, 0)) + b"b")
        head = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"(" + b"cnumpy\nndarray\n" + self.encode((0,))
                + self.encode("b") + b"t" + b"R")
        state = b"(" + self.encode(1) + self.encode(tuple(a.shape)) + dtype + self.encode(False) \
            + self.encode(a.tobytes()) + b"t"
        return head + state + b"b"


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(path, per_batch=2, extra=None):
    """cifar-10-python.tar.gz with five training batches of ``per_batch`` images; returns (images, labels)."""
    rng = np.random.RandomState(0)
    images, labels = [], []
    with tarfile.open(str(path), "w:gz") as tar:
        members = {}
        for b in range(1, 6):
            data = rng.randint(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            batch_labels = [int(x) for x in rng.randint(0, 10, size=per_batch)]
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels += batch_labels
            members["data_batch_%d" % b] = dict(batch_label="training batch %d of 5" % b, labels=batch_labels,
                                                data=data, filenames=["f%d_%d.png" % (b, i) for i in range(per_batch)])
        members["batches.meta"] = dict(num_cases_per_batch=per_batch, label_names=CIFAR_NAMES, num_vis=3072)
        members["test_batch"] = dict(batch_label="testing batch 1 of 1", labels=[9],
                                     data=np.full((1, 3072), 7, np.uint8), filenames=["t.png"])
        members.update(extra or {})
        for name, obj in members.items():
            raw = obj if isinstance(obj, bytes) else Py2Pickle().dumps(obj)
            info = tarfile.TarInfo("cifar-10-batches-py/" + name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return np.concatenate(images), labels


def test_cifar10_tarball_gives_the_training_images_labels_and_class_names(tmp_path):
    tarball = tmp_path / "cifar-10-python.tar.gz"
    images, labels = write_cifar10(tarball)
    assert pickle.loads(Py2Pickle().dumps(dict(a=[1]))) == {"a": [1]}  # the writer makes valid pickles
    result = run_tool("--source", tarball, "--dest", tmp_path / "cifar10.zip")
    assert result.exit_code == 0, result.output
    assert "Wrote 10 images of 32x32x3 with labels" in result.output
    got, ds = images_of(tmp_path / "cifar10.zip")
    assert np.array_equal(got, images.transpose(0, 3, 1, 2))  # the 5 training batches, in order (no test batch)
    assert [int(ds.get_label(i).argmax()) for i in range(10)] == labels
    with zipfile.ZipFile(str(tmp_path / "cifar10.zip")) as z:
        assert json.loads(z.read("dataset.json"))["class_names"] == CIFAR_NAMES
    import train  # train.py --help's example takes this zip

    result = CliRunner().invoke(train.main, ["--outdir", str(tmp_path / "runs"), "--data", str(tmp_path / "cifar10.zip"),
                                             "--cfg", "cifar", "--cond", "1", "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0 and "cifar10-cond-cifar" in result.output, result.output


def test_cifar10_batches_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch %s" % (tmp_path / "pwned"),))

    tarball = tmp_path / "cifar-10-python.tar.gz"
    write_cifar10(tarball, extra={"data_batch_3": pickle.dumps(Evil(), protocol=2)})
    result = run_tool("--source", tarball, "--dest", tmp_path / "out.zip")
    assert result.exit_code == 2 and "data_batch_3" in error_line(result) and "system" in error_line(result)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out.zip").exists()


# ---------------------------------------------------------------------------- MNIST


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(str(path), "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_files_give_padded_greyscale_digits_with_labels(tmp_path):
    rng = np.random.RandomState(1)
    digits = rng.randint(1, 256, size=(5, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", digits)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    result = run_tool("--source", tmp_path / "train-images-idx3-ubyte.gz", "--dest", tmp_path / "mnist.zip",
                      "--max-images", 4)
    assert result.exit_code == 0, result.output
    assert "Wrote 4 images of 32x32x1 with labels" in result.output
    got, ds = images_of(tmp_path / "mnist.zip")
    padded = np.zeros((4, 1, 32, 32), np.uint8)
    padded[:, 0, 2:30, 2:30] = digits[:4]  # 28 -> 32 with two black pixels on each side, as the host pads
    assert np.array_equal(got, padded)
    assert [int(ds.get_label(i).argmax()) for i in range(4)] == [3, 1, 4, 1]

    os.remove(str(tmp_path / "train-labels-idx1-ubyte.gz"))
    result = run_tool("--source", tmp_path / "train-images-idx3-ubyte.gz", "--dest", tmp_path / "m2.zip")
    assert result.exit_code == 2 and "train-labels-idx1-ubyte.gz" in error_line(result)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x03" + b"\0" * 5))
    result = run_tool("--source", tmp_path / "t10k-images-idx3-ubyte.gz", "--dest", tmp_path / "m3.zip")
    assert result.exit_code == 2 and "labels" in error_line(result)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    result = run_tool("--source", tmp_path / "t10k-images-idx3-ubyte.gz", "--dest", tmp_path / "m3.zip")
    assert result.exit_code == 2 and "idx" in error_line(result)
    assert sorted(p for p in os.listdir(str(tmp_path)) if not p.endswith(".gz")) == ["mnist.zip"]


# ---------------------------------------------------------------------------- LSUN (LMDB)


def encoded(array, fmt):
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format=fmt, **({"lossless": True} if fmt == "webp" else {}))
    return buf.getvalue()


def test_lsun_lmdb_folder_is_read_in_key_order_and_broken_records_are_skipped(tmp_path):
    import lmdb  # in the test extra
    rng = np.random.RandomState(2)
    pictures = [rng.randint(0, 256, size=(12, 16, 3), dtype=np.uint8) for _ in range(3)]
    folder = str(tmp_path / "cat_lmdb")
    env = lmdb.open(folder, map_size=1 << 22)
    with env.begin(write=True) as txn:  # LSUN's layout: key -> encoded image (webp), in key order
        txn.put(b"0002", encoded(pictures[2], "webp"))
        txn.put(b"0000", encoded(pictures[0], "webp"))
        txn.put(b"0001", b"not an image")
        txn.put(b"0003", encoded(pictures[1], "png"))
    env.close()
    result = run_tool("--source", folder, "--dest", tmp_path / "cats.zip", "--transform", "center-crop",
                      "--width", 8, "--height", 8, "--resize-filter", "box")
    assert result.exit_code == 0, result.output
    assert "Wrote 3 images of 8x8x3 to" in result.output and "Skipped 1 LMDB record" in result.output
    got, ds = images_of(tmp_path / "cats.zip")
    for img, picture in zip(got, [pictures[0], pictures[2], pictures[1]]):  # key order; lossless encodings
        square = PIL.Image.fromarray(picture[:, 2:14]).resize((8, 8), PIL.Image.BOX)  # the centred 12x12 square
        assert np.array_equal(img.transpose(1, 2, 0), np.asarray(square))
    assert not ds.has_labels


def test_lsun_without_the_lmdb_package_says_how_to_get_it(tmp_path, monkeypatch):
    folder = tmp_path / "bedroom_lmdb"
    folder.mkdir()
    monkeypatch.setitem(sys.modules, "lmdb", None)  # import fails as if not installed
    result = run_tool("--source", folder, "--dest", tmp_path / "out.zip")
    assert result.exit_code == 2 and "pip install lmdb" in error_line(result)


# ---------------------------------------------------------------------------- --transform, --width/--height, filters


def write_png(path, array):
    PIL.Image.fromarray(array).save(str(path))


def test_center_crop_takes_the_middle_square(tmp_path):
    img = np.zeros((24, 40, 3), np.uint8)
    img[:] = (255, 255, 0)
    img[:, 8:32] = (0, 0, 255)  # the centred 24x24 square
    os.makedirs(str(tmp_path / "src"))
    write_png(tmp_path / "src" / "a.png", img)
    result = run_tool("--source", tmp_path / "src", "--dest", tmp_path / "out", "--transform", "center-crop",
                      "--width", 8, "--height", 8, "--resize-filter", "box")
    assert result.exit_code == 0, result.output
    got, _ = images_of(tmp_path / "out")
    assert (got[0].transpose(1, 2, 0) == (0, 0, 255)).all()


def test_center_crop_wide_letterboxes_the_hosts_band_and_drops_small_images(tmp_path):
    w, h, W, H = 40, 30, 16, 8
    band = int(round(W * h / w))  # 12 rows, rows 9..20
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (0, 255, 0)
    img[9:9 + band] = (255, 0, 0)
    os.makedirs(str(tmp_path / "src"))
    write_png(tmp_path / "src" / "a.png", img)
    write_png(tmp_path / "src" / "b.png", np.zeros((30, 10, 3), np.uint8))  # narrower than W: dropped
    write_png(tmp_path / "src" / "c.png", np.zeros((10, 40, 3), np.uint8))  # band of 4 rows < H: dropped
    result = run_tool("--source", tmp_path / "src", "--dest", tmp_path / "out.zip", "--transform", "center-crop-wide",
                      "--width", W, "--height", H, "--resize-filter", "box")
    assert result.exit_code == 0, result.output
    assert "Wrote 1 images of 16x16x3" in result.output and "Dropped 2 image(s)" in result.output
    got, _ = images_of(tmp_path / "out.zip")
    out = got[0].transpose(1, 2, 0)
    assert (out[4:12] == (255, 0, 0)).all()  # the band, centred; none of the green outside it
    assert (out[:4] == 0).all() and (out[12:] == 0).all()  # black letterbox


def test_width_height_resize_only_and_the_filters_differ(tmp_path):
    checker = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    img = np.stack([checker] * 3, axis=-1)
    img[:, :4] = 0  # some structure for lanczos to ring on
    os.makedirs(str(tmp_path / "src"))
    write_png(tmp_path / "src" / "a.png", img)
    outs = {}
    for name in ("box", "lanczos"):
        result = run_tool("--source", tmp_path / "src", "--dest", tmp_path / name, "--width", 8, "--height", 8,
                          "--resize-filter", name)
        assert result.exit_code == 0, result.output
        outs[name] = images_of(tmp_path / name)[0][0].transpose(1, 2, 0).astype(int)
    means = img.reshape(8, 2, 8, 2, 3).mean(axis=(1, 3))  # box = the mean of each 2x2 cell
    assert np.abs(outs["box"] - means).max() <= 1
    assert np.abs(outs["lanczos"] - means).max() > 8
    result = run_tool("--source", tmp_path / "src", "--dest", tmp_path / "one", "--width", 8)
    assert result.exit_code == 2 and "8x16" in error_line(result)  # resize only: the height stays 16
    assert not (tmp_path / "one").exists()


# ---------------------------------------------------------------------------- bad input


def test_bad_destinations_and_sizes_are_one_line_exit_2_and_write_nothing(tmp_path):
    (tmp_path / "existing.zip").write_bytes(b"keep me")
    os.makedirs(str(tmp_path / "src"))
    write_png(tmp_path / "src" / "a.png", np.zeros((33, 33, 3), np.uint8))
    builtin = ("--source", "builtin", "--max-images", 2)
    cases = [
        (builtin + ("--dest", tmp_path / "x.tar"), "use %s.zip" % (tmp_path / "x")),
        (builtin + ("--dest", tmp_path / "x.tar.gz"), "not a .tar.gz"),
        (builtin + ("--dest", tmp_path / "existing.zip"), "already exists"),
        (builtin + ("--dest", tmp_path / "src"), "non-empty folder"),
        (builtin + ("--dest", tmp_path / "o.zip", "--resolution", "33x33"), "power of two"),
        (builtin + ("--dest", tmp_path / "o.zip", "--width", 32, "--height", 16), "square"),
        (builtin + ("--dest", tmp_path / "o.zip", "--transform", "center-crop", "--width", 32), "--height"),
        (builtin + ("--dest", tmp_path / "o.zip", "--transform", "center-crop-wide", "--width", 16, "--height", 32),
         "must not exceed"),
        (builtin + ("--dest", tmp_path / "o.zip", "--resolution", "32", "--width", 32), "either --resolution"),
        (builtin + ("--dest", tmp_path / "o.zip", "--width", 0), "--width"),
        (builtin + ("--dest", tmp_path / "o.zip", "--resize-filter", "bicubic"), "--resize-filter"),
        (("--source", tmp_path / "src", "--dest", tmp_path / "o.zip"), "--resolution 32x32"),  # 33x33 images
        (("--source", tmp_path / "existing.zip", "--dest", tmp_path / "o.zip"), "zip"),
        (("--source", tmp_path / "src" / "a.png", "--dest", tmp_path / "o.zip"), "cifar-10-python.tar.gz"),
    ]
    for args, expected in cases:
        result = run_tool(*args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in error_line(result), (args, result.output)
    assert sorted(os.listdir(str(tmp_path))) == ["existing.zip", "src"]
    assert (tmp_path / "existing.zip").read_bytes() == b"keep me"


def test_datasets_get_the_users_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        for dest in ("faces.zip", "faces"):
            result = run_tool("--source", "builtin", "--dest", tmp_path / dest, "--max-images", 2, "--resolution", 8)
            assert result.exit_code == 0, result.output
        assert stat.S_IMODE(os.stat(str(tmp_path / "faces.zip")).st_mode) == 0o644
        assert stat.S_IMODE(os.stat(str(tmp_path / "faces")).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(str(tmp_path / "faces" / "00000")).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(str(tmp_path / "faces" / "dataset.json")).st_mode) == 0o644
    finally:
        os.umask(old)
