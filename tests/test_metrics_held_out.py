"""nda_auroc scores only real images the networks never trained on, and says which ones."""

import numpy as np
import pytest
import torch
from PIL import Image

from metrics import held_out, registry
from metrics.options import construct_class_by_name
from nda_stylegan.sample_data import render_faces

RES = 16
BUILTIN = dict(class_name="training.dataset.BuiltinDataset", size=40, resolution=RES, seed=0, max_size=40,
               use_labels=False, xflip=False)


def _images(dataset):
    return [np.asarray(dataset[i][0]) for i in range(len(dataset))]


def _is_among(image, images):
    return any(np.array_equal(image, other) for other in images)


class RecordingD(torch.nn.Module):
    """Scores by mean brightness; keeps every image it is shown (a module-level list: metrics copy D)."""

    seen = []

    def forward(self, img, c):
        RecordingD.seen.append(img.detach().clone())
        return img.mean(dim=(1, 2, 3))[:, None]


def _scored_reals(num_images):
    """The real images nda_auroc scored: the first batch D saw (reals come first, alone)."""
    return [((x.numpy() + 1) * 127.5).round().astype(np.uint8) for x in RecordingD.seen[0][:num_images]]


def test_builtin_nda_auroc_scores_faces_past_the_training_set():
    RecordingD.seen.clear()
    result = registry.compute_metric("nda_auroc", G=None, dataset=BUILTIN, device="cpu", D=RecordingD(),
                                     nda_spec="jigsaw", num_images=12, batch_size=12, corruptions=["contrast"])
    assert result["held_out"] == {"source": "built-in faces 40-51, past the 40 the run trained on", "images": 12}
    training = _images(construct_class_by_name(**BUILTIN))
    scored = _scored_reals(12)
    assert len(scored) == 12 and not any(_is_among(image, training) for image in scored)
    expected = render_faces(np.arange(40, 52), RES, 0)[0].transpose(0, 3, 1, 2)
    assert all(np.array_equal(a, b) for a, b in zip(scored, expected))


@pytest.fixture
def folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(10):
        Image.new("RGB", (RES, RES), (i * 20, 255 - i * 20, 7 * i)).save(data / ("%02d.png" % i))
    return data


def test_subset_run_holds_out_the_images_outside_its_subset(folder):
    training = dict(class_name="training.dataset.ImageFolderDataset", path=str(folder), max_size=6, random_seed=3,
                    use_labels=False, xflip=True)
    dataset, source = held_out.held_out_reals(dict(training), dict(training))
    trained = _images(construct_class_by_name(**dict(training, xflip=False)))
    kept = _images(dataset)
    assert len(kept) == 4 and source == "the 4 images of %s outside the run's --subset of 6" % folder
    assert not any(_is_among(image, trained) for image in kept)  # disjoint, and together all ten
    assert len(kept) + len(trained) == len(construct_class_by_name(**dict(training, max_size=None, xflip=False)))


def test_data_trained_on_in_full_is_refused_and_other_data_is_used_whole(folder, tmp_path):
    training = dict(class_name="training.dataset.ImageFolderDataset", path=str(folder), max_size=10, use_labels=False)
    with pytest.raises(held_out.NoHeldOutData, match="trained on all of .*give --data with held-out images"):
        held_out.held_out_reals(dict(training), dict(training))
    same_folder = dict(class_name="training.dataset.ImageFolderDataset", path=str(folder) + "/")
    with pytest.raises(held_out.NoHeldOutData):  # the same folder spelled differently is still the training data
        held_out.held_out_reals(same_folder, dict(training))
    other = tmp_path / "test"
    other.mkdir()
    Image.new("RGB", (RES, RES), (1, 2, 3)).save(other / "a.png")
    Image.new("RGB", (RES, RES), (4, 5, 6)).save(other / "b.png")
    given = dict(class_name="training.dataset.ImageFolderDataset", path=str(other))
    dataset, source = held_out.held_out_reals(given, dict(training))
    assert len(dataset) == 2 and source == "%s (not the path the run trained on)" % other
    dataset, source = held_out.held_out_reals(given, {})
    assert source == "%s (the run's training data is not recorded)" % other


def test_builtin_dataset_first_index_and_held_out_subsets_are_consistent():
    shifted = construct_class_by_name(**dict(BUILTIN, size=5, first_index=7, use_labels=True))
    images, labels = render_faces(np.arange(7, 12), RES, 0)
    assert all(np.array_equal(shifted[i][0], images[i].transpose(2, 0, 1)) for i in range(5))
    assert [int(np.argmax(shifted[i][1])) for i in range(5)] == list(labels)
    subset = construct_class_by_name(**dict(BUILTIN, max_size=30, random_seed=1))
    rest = construct_class_by_name(**dict(BUILTIN, max_size=30, random_seed=1, held_out=True))
    raws = sorted([subset.get_details(i)["raw_idx"] for i in range(30)] + [rest.get_details(i)["raw_idx"] for i in range(10)])
    assert raws == list(range(40))
