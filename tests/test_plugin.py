"""The trainer plugin: its click options, the config rewrite, the run-name slug, bad values."""

import copy

import click
import pytest
from click.testing import CliRunner

from nda_stylegan.plugin import LOSS_CLASS, plugin


class AttrDict(dict):
    """Stands in for a host's EasyDict."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)


def host_config():
    return AttrDict(loss_kwargs=AttrDict(class_name="training.loss.StyleGAN2Loss", r1_gamma=10, pl_weight=0),
                    batch_size=8)


def parse(args):
    """Run a command carrying only the plugin's options; return (exit code, output, values)."""
    seen = {}

    @click.command()
    def cmd(**kwargs):
        seen.update(kwargs)

    cmd.params.extend(plugin.click_options())
    result = CliRunner().invoke(cmd, args)
    return result.exit_code, result.output, seen


def rewrite(args):
    code, out, values = parse(args)
    assert code == 0, out
    config = host_config()
    return config, plugin.rewrite_config(config, values)


def test_entry_point_and_names():
    from importlib import metadata

    eps = metadata.entry_points()
    eps = eps.select(group="stylegan.trainer_plugins") if hasattr(eps, "select") else eps.get("stylegan.trainer_plugins", [])
    loaded = {ep.name: ep.load() for ep in eps}
    assert loaded["nda"] is plugin and plugin.name == "nda"
    assert [o.name for o in plugin.click_options()] == plugin.option_names()
    assert plugin.click_options()[0] is not plugin.click_options()[0]  # fresh objects per host


def test_off_without_nda_leaves_config_untouched():
    code, _, values = parse([])
    assert code == 0 and set(values) == set(plugin.option_names())
    config = host_config()
    before = copy.deepcopy(config)
    assert plugin.rewrite_config(config, values) is None
    assert config == before
    assert plugin.rewrite_config(config, {"nda": "none"}) is None and config == before


def test_rewrite_wraps_the_host_loss_and_keeps_its_kwargs():
    config, desc = rewrite(["--nda=jigsaw,stitch"])
    assert desc == "nda-jigsaw-stitch"
    lk = config["loss_kwargs"]
    assert isinstance(lk, AttrDict) and lk.class_name == LOSS_CLASS  # the host's container type kept
    assert list(lk)[0] == "class_name"
    assert dict(lk) == dict(class_name=LOSS_CLASS, nda_inner_class_name="training.loss.StyleGAN2Loss",
                            nda_spec="jigsaw,stitch", nda_lambda=0.25, nda_mode="weighted", nda_loss="logistic",
                            r1_gamma=10, pl_weight=0)
    assert config["batch_size"] == 8


def test_default_spec_word_is_resolved_into_the_config(monkeypatch):
    from nda_stylegan import spec

    config, desc = rewrite(["--nda=default"])
    assert config["loss_kwargs"]["nda_spec"] == spec.DEFAULT_SPEC  # the run records negatives, not the word
    assert desc == "nda-" + spec.spec_slug(spec.DEFAULT_SPEC)
    # The config keeps what 'default' meant when the run started, whatever it means later.
    monkeypatch.setattr(spec, "DEFAULT_SPEC", "cutout(size=0.25)")
    config, desc = rewrite(["--nda=Default"])
    assert config["loss_kwargs"]["nda_spec"] == "cutout(size=0.25)" and desc == "nda-cutout_size0.25"
    code, out, _ = parse(["--help"])
    assert code == 0 and "'default' is" in out


def test_rewrite_with_all_options_and_parameterised_slug():
    config, desc = rewrite(["--nda=jigsaw(k=4):3,cutout", "--nda-lambda=0.5", "--nda-mode=mixture", "--nda-loss=auto"])
    assert desc.startswith("nda-jigsaw") and "cutout" in desc and "(" not in desc and "," not in desc
    lk = config["loss_kwargs"]
    assert (lk["nda_lambda"], lk["nda_mode"], lk["nda_loss"]) == (0.5, "mixture", "logistic")
    config, _ = rewrite(["--nda=jigsaw", "--nda-loss=hinge", "--nda-lambda=1"])
    assert config["loss_kwargs"]["nda_loss"] == "hinge" and config["loss_kwargs"]["nda_lambda"] == 1.0


@pytest.mark.parametrize("args, words", [
    (["--nda=jigsaw", "--nda-lambda=0"], "(0, 1]"),
    (["--nda=jigsaw", "--nda-lambda=1.5"], "(0, 1]"),
    (["--nda=jigsaw", "--nda-lambda=nan"], "(0, 1]"),
    (["--nda=jigsaw", "--nda-mode=both"], "--nda-mode"),
    (["--nda=jigsaw", "--nda-loss=wgan"], "--nda-loss"),
])
def test_bad_option_values_exit_2(args, words):
    code, out, _ = parse(args)
    assert code == 2 and words in out


@pytest.mark.parametrize("values, exc, words", [
    ({"nda": "bogus"}, click.BadParameter, "bogus"),
    ({"nda": "jigsaw(k="}, click.BadParameter, "jigsaw"),
    ({"nda": None, "nda_lambda": 0.5}, click.UsageError, "--nda-lambda has no effect without --nda"),
    ({"nda": "jigsaw", "nda_mode": "mixture", "nda_loss": "hinge"}, click.UsageError, "weighted"),
    ({"nda": "jigsaw", "nda_lambda": -1}, click.BadParameter, "(0, 1]"),
    ({"nda": "jigsaw", "other": 1}, click.UsageError, "unknown option"),
    ({"nda": ""}, click.BadParameter, "empty"),
    ({"nda": "  "}, click.BadParameter, "--nda=none"),
    ({"nda": "jigsaw", "nda_mode": "reweight"}, click.UsageError, "drop --nda"),
    ({"nda": None, "nda_mode": "reweight", "nda_loss": "hinge"}, click.UsageError, "no effect"),
    ({"nda": None, "nda_start_kimg": 10}, click.UsageError, "--nda-start-kimg has no effect"),
    ({"nda": "jigsaw", "nda_start_kimg": -1}, click.BadParameter, ">= 0"),
])
def test_bad_values_in_rewrite_are_one_line_click_errors(values, exc, words):
    config = host_config()
    before = copy.deepcopy(config)
    with pytest.raises(exc) as info:
        plugin.rewrite_config(config, values)
    assert words in info.value.format_message() and "\n" not in info.value.format_message()
    assert config == before


def test_rewrite_twice_and_missing_loss_kwargs_are_refused():
    config, _ = rewrite(["--nda=jigsaw"])
    with pytest.raises(click.UsageError, match="twice"):
        plugin.rewrite_config(config, {"nda": "jigsaw"})
    with pytest.raises(click.UsageError, match="loss_kwargs"):
        plugin.rewrite_config({"batch_size": 8}, {"nda": "jigsaw"})


def test_reweight_control_wraps_the_loss_without_negatives():
    config, desc = rewrite(["--nda-mode=reweight", "--nda-lambda=0.25"])
    assert desc == "nda-reweight"
    lk = config["loss_kwargs"]
    assert lk["class_name"] == LOSS_CLASS and lk["nda_spec"] is None
    assert (lk["nda_mode"], lk["nda_lambda"]) == ("reweight", 0.25)


def test_start_kimg_goes_into_the_loss_and_the_run_name():
    config, desc = rewrite(["--nda=jigsaw", "--nda-start-kimg=10"])
    assert desc == "nda-jigsaw-start10" and config["loss_kwargs"]["nda_start_kimg"] == 10.0
    config, _ = rewrite(["--nda=jigsaw"])
    assert "nda_start_kimg" not in config["loss_kwargs"]  # configs without a warm-up stay as before
    code, out, _ = parse(["--nda=jigsaw", "--nda-start-kimg=inf"])
    assert code == 2 and ">= 0" in out


@pytest.mark.parametrize("spec, resolution, batch_gpu, words", [
    ("jigsaw(k=3)", 32, 4, "divisible by 3, got 32x32"),
    ("jigsaw,mosaic(k=8)", 4, 4, "at least 8 pixels per side"),
    ("jigsaw,stitch", 32, 1, "stitch pairs each image with another one"),
])
def test_a_spec_that_cannot_run_on_the_hosts_images_is_refused_before_training(spec, resolution, batch_gpu, words):
    """A fork's config (stylegan2-ada-pytorch's args, stylegan3's c) knows the resolution and the
    batch per process when the plugin rewrites it: the spec is checked there, not at the first step."""
    config = host_config()
    config.update(training_set_kwargs=AttrDict(resolution=resolution), batch_gpu=batch_gpu)
    before = copy.deepcopy(config)
    with pytest.raises(click.BadParameter, match=words):
        plugin.rewrite_config(config, {"nda": spec})
    assert config == before
    config.update(training_set_kwargs=AttrDict(resolution=48), batch_gpu=2)
    assert plugin.rewrite_config(config, {"nda": spec}).startswith("nda-")
