"""training.dataset: the host's Dataset interface on folders, zips and the built-in faces, and a
clear DatasetError for every kind of unusable input."""

import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from nda_stylegan.sample_data import make_faces
from training.dataset import BuiltinDataset, DatasetError, ImageFolderDataset


def write_folder(folder, arrays, labels=None, names=None, ext="png"):
    os.makedirs(str(folder), exist_ok=True)
    names = names or ["img%03d.%s" % (i, ext) for i in range(len(arrays))]
    for name, arr in zip(names, arrays):
        path = os.path.join(str(folder), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        PIL.Image.fromarray(arr).save(path)
    if labels is not None:
        with open(os.path.join(str(folder), "dataset.json"), "w") as f:
            json.dump({"labels": [[n, l] for n, l in zip(names, labels)]}, f)
    return str(folder)


def zip_folder(folder, zip_path):
    with zipfile.ZipFile(str(zip_path), "w") as z:
        for root, _dirs, files in os.walk(folder):
            for f in files:
                full = os.path.join(root, f)
                z.write(full, os.path.relpath(full, folder).replace(os.sep, "/"))
    return str(zip_path)


def random_images(n, shape, seed=0):
    return list(np.random.RandomState(seed).randint(0, 256, size=(n,) + shape, dtype=np.uint8))


def test_folder_dataset_items_properties_and_onehot_labels(tmp_path):
    images = random_images(5, (16, 16, 3))
    path = write_folder(tmp_path / "data", images, labels=[0, 2, 1, 2, 0])
    ds = ImageFolderDataset(path, use_labels=True)
    assert len(ds) == 5 and ds.name == "data"
    assert ds.image_shape == [3, 16, 16] and ds.num_channels == 3 and ds.resolution == 16
    assert ds.has_labels and ds.has_onehot_labels and ds.label_shape == [3] and ds.label_dim == 3
    img, label = ds[1]
    assert img.dtype == np.uint8 and img.shape == (3, 16, 16)
    assert np.array_equal(img, images[1].transpose(2, 0, 1))
    assert label.dtype == np.float32 and label.tolist() == [0, 0, 1]
    assert ds.get_label(4).tolist() == [1, 0, 0]


def test_zip_matches_folder_and_survives_pickling(tmp_path):
    folder = write_folder(tmp_path / "data", random_images(4, (8, 8, 3)), labels=[[0.5, 1.0]] * 4,
                          names=["00000/img%08d.png" % i for i in range(4)])
    zipped = zip_folder(folder, tmp_path / "data.zip")
    a, b = ImageFolderDataset(folder, use_labels=True), ImageFolderDataset(zipped, use_labels=True)
    b[0]  # opens the zip file handle, which must not be pickled
    b2 = pickle.loads(pickle.dumps(b))
    for i in range(4):
        assert np.array_equal(a[i][0], b2[i][0])
    assert not b2.has_onehot_labels and b2.get_label(2).tolist() == [0.5, 1.0]
    b.close()
    b2.close()


def test_without_labels_use_labels_gives_empty_labels_and_require_labels_fails(tmp_path):
    path = write_folder(tmp_path / "plain", random_images(3, (8, 8, 3)))
    ds = ImageFolderDataset(path, use_labels=True)
    assert not ds.has_labels and ds.label_dim == 0 and ds[0][1].shape == (0,)
    with pytest.raises(DatasetError, match="no labels.*--cond"):
        ImageFolderDataset(path, use_labels=True, require_labels=True)


def test_greyscale_and_palette_images(tmp_path):
    grey = write_folder(tmp_path / "grey", random_images(2, (8, 8)))
    ds = ImageFolderDataset(grey)
    assert ds.image_shape == [1, 8, 8] and ds[1][0].shape == (1, 8, 8)
    pal = tmp_path / "pal"
    pal.mkdir()
    PIL.Image.fromarray(random_images(1, (8, 8, 3))[0]).convert("P").save(str(pal / "a.png"))
    assert ImageFolderDataset(str(pal))[0][0].shape == (3, 8, 8)


def test_max_size_subset_is_seeded_sorted_and_xflip_appends_mirrors(tmp_path):
    images = random_images(10, (8, 8, 3))
    path = write_folder(tmp_path / "data", images)
    a = ImageFolderDataset(path, max_size=4, random_seed=1)
    b = ImageFolderDataset(path, max_size=4, random_seed=1)
    raws = [a.get_details(i)["raw_idx"] for i in range(len(a))]
    assert len(a) == 4 and raws == sorted(raws) == [b.get_details(i)["raw_idx"] for i in range(4)]
    c = ImageFolderDataset(path, max_size=4, random_seed=2)
    assert raws != [c.get_details(i)["raw_idx"] for i in range(4)]
    f = ImageFolderDataset(path, xflip=True)
    assert len(f) == 20
    assert np.array_equal(f[13][0], images[3].transpose(2, 0, 1)[:, :, ::-1])
    assert f.get_details(13)["xflip"] and not f.get_details(3)["xflip"]


def _bad_cases(tmp):
    def folder(name, arrays, **kw):
        return write_folder(tmp / name, arrays, **kw)

    cases = {}
    cases["missing"] = (str(tmp / "nope"), {}, "does not exist")
    txt = tmp / "file.txt"
    txt.write_text("x")
    cases["not a zip"] = (str(txt), {}, "neither a folder nor a .zip")
    corrupt_zip = tmp / "corrupt.zip"
    corrupt_zip.write_bytes(b"PK\x03\x04 not really a zip")
    cases["corrupt zip"] = (str(corrupt_zip), {}, "not a readable zip")
    bad_img = tmp / "badimg"
    bad_img.mkdir()
    (bad_img / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cases["corrupt image"] = (str(bad_img), {}, "cannot read image a.png")
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    cases["empty"] = (str(empty), {}, "no images")
    cases["non-square"] = (folder("ns", random_images(2, (16, 8, 3))), {}, "must be square")
    cases["non-power-of-two"] = (folder("npot", random_images(2, (24, 24, 3))), {}, "not a power of two")
    cases["mixed sizes"] = (folder("mixs", random_images(1, (8, 8, 3)) + random_images(1, (16, 16, 3))), {},
                            "mixed resolutions")
    cases["mixed channels"] = (folder("mixc", random_images(1, (8, 8, 3)) + random_images(1, (8, 8))), {},
                               "mixed channel counts")
    cases["resolution mismatch"] = (folder("res", random_images(2, (8, 8, 3))), {"resolution": 16},
                                    "resolution=16")
    bad_json = folder("badjson", random_images(2, (8, 8, 3)))
    with open(os.path.join(bad_json, "dataset.json"), "w") as f:
        f.write("{not json")
    cases["bad dataset.json"] = (bad_json, {"use_labels": True}, "cannot parse dataset.json")
    partial = folder("partial", random_images(2, (8, 8, 3)))
    with open(os.path.join(partial, "dataset.json"), "w") as f:
        json.dump({"labels": [["img000.png", 1]]}, f)
    cases["label missing"] = (partial, {"use_labels": True}, "no label for 1 image.*img001.png")
    negative = folder("neg", random_images(2, (8, 8, 3)), labels=[0, -1])
    cases["negative class"] = (negative, {"use_labels": True}, "class indices >= 0")
    ragged = folder("ragged", random_images(2, (8, 8, 3)), labels=[[1.0], [1.0, 2.0]])
    cases["ragged labels"] = (ragged, {"use_labels": True}, "equal-length")
    return cases


def test_every_bad_input_is_one_clear_dataset_error(tmp_path):
    for what, (path, kwargs, pattern) in _bad_cases(tmp_path).items():
        with pytest.raises(DatasetError, match=pattern) as info:
            ImageFolderDataset(path, **kwargs)
        message = str(info.value)
        assert "\n" not in message, what
        assert isinstance(info.value, ValueError)


def test_builtin_dataset_matches_sample_data_and_labels_are_expressions():
    ds = BuiltinDataset(size=40, resolution=16, use_labels=True)
    images, labels = make_faces(40, resolution=16)
    assert len(ds) == 40 and ds.image_shape == [3, 16, 16] and ds.label_dim == 4 and ds.has_onehot_labels
    for i in (0, 17, 39):
        img, label = ds[i]
        assert np.array_equal(img, images[i].transpose(2, 0, 1))
        assert int(label.argmax()) == labels[i] and label.sum() == 1
    # A batch fetch renders in one call and agrees with single fetches.
    batch = ds.__getitems__([5, 3, 5, 30])
    assert all(np.array_equal(b[0], ds[i][0]) for b, i in zip(batch, [5, 3, 5, 30]))


def test_builtin_dataset_in_a_dataloader_with_subset_and_mirror():
    ds = BuiltinDataset(size=30, resolution=8, max_size=10, xflip=True, random_seed=3)
    assert len(ds) == 20
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False)
    imgs, labels = next(iter(loader))
    assert imgs.shape == (8, 3, 8, 8) and imgs.dtype == torch.uint8 and labels.shape == (8, 0)
    assert torch.equal(torch.as_tensor(ds[12][0]), torch.as_tensor(ds[2][0][:, :, ::-1].copy()))


def test_builtin_dataset_without_cache_renders_the_same_images():
    cached = BuiltinDataset(size=6, resolution=8)
    uncached = BuiltinDataset(size=6, resolution=8, cache_limit_bytes=0)
    assert all(np.array_equal(cached[i][0], uncached[i][0]) for i in range(6))


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(resolution=24), "power of two"),
    (dict(size=0), "size must be >= 1"),
    (dict(size=4, max_size=0), "max_size must be >= 1"),
])
def test_builtin_dataset_bad_arguments(kwargs, pattern):
    with pytest.raises(DatasetError, match=pattern):
        BuiltinDataset(**kwargs)


# ---------------------------------------------------------------------------- dataset_tool.py

def run_tool(*args):
    from click.testing import CliRunner

    import dataset_tool

    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args], catch_exceptions=False)


def error_line(result):
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_tool_exports_the_builtin_faces_in_the_datasets_format(tmp_path):
    dest = tmp_path / "faces.zip"
    result = run_tool("--source", "builtin", "--dest", dest, "--max-images", 12, "--resolution", "16x16")
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(str(dest)) as z:
        assert "00000/img00000011.png" in z.namelist() and "dataset.json" in z.namelist()
    ds = ImageFolderDataset(str(dest), use_labels=True)
    images, labels = make_faces(12, resolution=16)
    assert len(ds) == 12 and ds.label_dim == 4
    for i in (0, 11):
        assert np.array_equal(ds[i][0], images[i].transpose(2, 0, 1))  # PNG is lossless
        assert int(ds[i][1].argmax()) == labels[i]
    assert sorted(os.listdir(str(tmp_path))) == ["faces.zip"]  # no temp files left


def test_tool_labels_from_subfolders_resizes_and_writes_a_folder(tmp_path):
    src = tmp_path / "src"
    write_folder(src, random_images(2, (20, 30, 3)), names=["cats/a.png", "cats/b.jpg"])
    write_folder(src, random_images(1, (64, 64, 3)), names=["dogs/c.png"])
    dest = tmp_path / "out"
    result = run_tool("--source", src, "--dest", dest, "--resolution", "8x8")
    assert result.exit_code == 0, result.output
    ds = ImageFolderDataset(str(dest), use_labels=True)
    assert ds.image_shape == [3, 8, 8] and [int(ds.get_label(i).argmax()) for i in range(3)] == [0, 0, 1]
    with open(str(dest / "dataset.json")) as f:
        assert json.load(f)["class_names"] == ["cats", "dogs"]


def test_tool_keeps_greyscale_and_existing_labels_and_max_images(tmp_path):
    src = write_folder(tmp_path / "grey", random_images(4, (8, 8)), labels=[3, 1, 2, 0])
    dest = tmp_path / "grey.zip"
    assert run_tool("--source", src, "--dest", dest, "--max-images", 3).exit_code == 0
    ds = ImageFolderDataset(str(dest), use_labels=True)
    assert len(ds) == 3 and ds.num_channels == 1
    assert [int(ds.get_label(i).argmax()) for i in range(3)] == [3, 1, 2]


def test_tool_bad_input_is_exit_2_with_one_line_and_no_output(tmp_path):
    mixed = write_folder(tmp_path / "mixed", random_images(1, (8, 8, 3)) + random_images(1, (16, 16, 3)))
    corrupt = tmp_path / "corrupt"
    write_folder(corrupt, random_images(1, (8, 8, 3)))
    (corrupt / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cases = [
        (("--source", tmp_path / "missing"), "does not exist"),
        (("--source", mixed), "--resolution"),
        (("--source", str(corrupt)), "zz.png"),
        (("--source", "builtin", "--resolution", "32x16"), "square"),
        (("--source", "builtin", "--resolution", "24x24"), "power of two"),
        (("--source", "builtin", "--resolution", "axb"), "WxH"),
        (("--source", "builtin", "--max-images", 0), "--max-images"),
        (("--source", "builtin", "--dest", tmp_path / "no" / "such" / "x.zip"), "does not exist"),
    ]
    for args, expected in cases:
        if "--dest" not in args:
            args = args + ("--dest", tmp_path / "out.zip")
        result = run_tool(*args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in error_line(result), (args, result.output)
    leftovers = [n for n in os.listdir(str(tmp_path)) if n not in ("mixed", "corrupt")]
    assert leftovers == [], leftovers
