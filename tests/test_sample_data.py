"""The built-in procedural faces: shapes, determinism, stable subsets, labels that matter."""

import numpy as np
import pytest

from nda_stylegan.sample_data import NUM_CLASSES, _render, _sample_params, make_faces, render_faces


def test_shapes_dtypes_and_label_range():
    images, labels = make_faces(40, resolution=16, seed=3)
    assert images.shape == (40, 16, 16, 3) and images.dtype == np.uint8
    assert labels.shape == (40,) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < NUM_CLASSES
    assert set(labels.tolist()) == set(range(NUM_CLASSES))


@pytest.mark.parametrize("resolution", [8, 64, 256])
def test_every_power_of_two_resolution_renders(resolution):
    images, _ = make_faces(2, resolution=resolution)
    assert images.shape == (2, resolution, resolution, 3)
    # Not a flat image: the face stands out from the background.
    assert images.reshape(2, -1, 3).std(axis=1).min() > 10


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, la = make_faces(6, seed=5)
    b, lb = make_faces(6, seed=5)
    c, _ = make_faces(6, seed=6)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_image_i_does_not_depend_on_n():
    small, small_labels = make_faces(5, seed=1)
    big, big_labels = make_faces(300, seed=1)  # more than one rendering chunk at 32 px
    assert np.array_equal(small, big[:5]) and np.array_equal(small_labels, big_labels[:5])
    one, one_label = render_faces([217], seed=1)
    assert np.array_equal(one[0], big[217]) and one_label[0] == big_labels[217]


def test_images_differ_from_each_other():
    images, _ = make_faces(50)
    flat = images.reshape(50, -1)
    assert len({row.tobytes() for row in flat}) == 50


def test_strong_global_structure_top_differs_from_bottom():
    # Faces are upright: the mean image is far from its own upside-down copy, which is what makes
    # a jigsaw or stitch negative distinguishable.
    images, _ = make_faces(300, resolution=32)
    mean = images.astype(np.float64).mean(axis=0)
    assert np.abs(mean - mean[::-1]).mean() > 8
    # ... while left and right mirror each other on average.
    assert np.abs(mean - mean[:, ::-1]).mean() < np.abs(mean - mean[::-1]).mean() / 3


def test_labels_change_the_face_not_the_identity():
    # Same face parameters rendered with each expression: the lower face changes clearly, while
    # the background corner (far from any feature) stays identical.
    params = _sample_params(np.arange(20), seed=0)
    renders = []
    for k in range(NUM_CLASSES):
        p = dict(params, label=np.full(20, k, dtype=np.int64))
        renders.append(_render(p, 32).astype(np.float64))
    for i in range(NUM_CLASSES):
        for j in range(i + 1, NUM_CLASSES):
            diff = np.abs(renders[i] - renders[j])
            changed = (diff.max(axis=-1) > 25).sum(axis=(1, 2))
            assert changed.min() >= 4  # every face visibly changes
            assert diff[:, :3, :3].max() == 0


@pytest.mark.parametrize("resolution", [12, 2, 2048, "32", 32.5])
def test_bad_resolution_is_a_clear_error(resolution):
    with pytest.raises(ValueError, match="power of two"):
        make_faces(2, resolution=resolution)


def test_negative_count_is_an_error():
    with pytest.raises(ValueError, match="n must be >= 0"):
        make_faces(-1)
