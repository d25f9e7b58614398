"""Real images the networks never trained on, for metrics that must not score training images
(``nda_auroc``: D has seen every training image as "real").

Where they come from, in order:

- the built-in faces: faces rendered past the run's training set (image ``size + i``);
- data at another path than the training data (``calc_metrics.py --data``): all of it (the
  path is all there is to compare: the same images copied elsewhere would pass as held out);
- the training data of a ``--subset`` run: the images outside the subset;
- the training data, all of it trained on: none exist, which is an error that says what to give.

``held_out_reals`` returns the dataset and a description that goes into the metric's result.
"""

import os

from metrics.options import construct_class_by_name

BUILTIN = "training.dataset.BuiltinDataset"


class NoHeldOutData(ValueError):
    """Every real image at hand was trained on; the message says how to provide held-out images."""


def _same_data(a, b):
    """Whether two dataset kwargs name the same images (class and path)."""
    if a.get("class_name") != b.get("class_name"):
        return False
    if a.get("path") is None or b.get("path") is None:
        return a.get("path") == b.get("path")
    return os.path.realpath(str(a["path"])) == os.path.realpath(str(b["path"]))


def _builtin_past_training(data, training, num_images):
    from training.dataset import BuiltinDataset

    trained = int(training.get("size", BuiltinDataset.DEFAULT_SIZE))
    first = int(training.get("first_index", 0)) + trained
    kwargs = dict(data, size=num_images, first_index=first, max_size=None, xflip=False)
    kwargs.pop("held_out", None)
    source = "built-in faces %d-%d, past the %d the run trained on" % (first, first + num_images - 1, trained)
    return construct_class_by_name(**kwargs), source


def held_out_reals(data, training=None, num_images=10000):
    """``(dataset, source)``: real images described by dataset kwargs ``data`` that a run trained
    on ``training`` (dataset kwargs; None: ``data`` is the training data; ``{}``: not recorded)
    never saw. Raises ``NoHeldOutData`` when there are none."""
    data = dict(data)
    training = dict(data if training is None else training)
    where = data.get("path", data.get("class_name"))
    if data.get("class_name") == BUILTIN and training.get("class_name") == BUILTIN:
        return _builtin_past_training(data, training, num_images)
    if not _same_data(data, training):
        known = "not the path the run trained on" if training else "the run's training data is not recorded"
        return construct_class_by_name(**dict(data, xflip=False)), "%s (%s)" % (where, known)
    subset = training.get("max_size")
    everything = construct_class_by_name(**dict(data, max_size=None, xflip=False))
    if subset is None or int(subset) >= len(everything):
        raise NoHeldOutData("nda_auroc needs real images the networks never saw, but the run trained on all of %s; "
                            "give --data with held-out images (a folder or zip of images left out of training)" % where)
    kwargs = dict(data, max_size=int(subset), random_seed=training.get("random_seed", 0), held_out=True, xflip=False)
    dataset = construct_class_by_name(**kwargs)
    return dataset, "the %d images of %s outside the run's --subset of %d" % (len(dataset), where, int(subset))
