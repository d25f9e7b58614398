"""build_config's pieces on their own: each turns its options into its part of the training-loop
config (or one clear UsageError), and the run description names them in the host's order."""

import inspect

import click
import pytest

from training import options, presets
from training.training_loop import training_loop


def test_every_config_key_is_a_training_loop_option():
    # A misspelt key would reach the loop as an unknown option and be ignored with a warning.
    loop_options = set(inspect.signature(training_loop).parameters)
    for kwargs in (dict(cfg="cpu"), dict(cfg="cifar", aug="fixed", p=0.2, kimg=1, gamma=1, batch=16, freezed=1)):
        _, c, _ = options.build_config(metrics=[], **kwargs)
        assert set(c) <= loop_options, set(c) - loop_options


def test_description_names_the_options_in_the_hosts_order():
    assert options._description("faces-mirror", "cpu", None, None, None, "", None, None) == "faces-mirror-cpu"
    assert (options._description("faces", "cifar", 2.0, 0.5, 16, "-fixed-p0.3", "/runs/x.pkl", 2)
            == "faces-cifar-gamma2-kimg0.5-batch16-fixed-p0.3-resumecustom-freezed2")
    assert options._description("faces", "cpu", None, None, None, "", "noresume", 0) == "faces-cpu-freezed0"
    assert options._description("faces", "paper256", None, None, None, "", "ffhq256", None) == "faces-paper256-resumeffhq256"
    assert options._description("faces", "cpu", None, None, None, "", "https://example.org/ffhq256.pkl", None) \
        == "faces-cpu-resumecustom"
    desc, _, _ = options.build_config(cfg="cpu", metrics=[], subset=10, mirror=True, gamma=2, aug="ada", target=0.7)
    assert desc == "builtin-subset10-mirror-cpu-gamma2-ada-target0.7"


def test_processes_come_from_torchrun_when_it_started_us():
    assert options._process_config(None, None) == (1, "cpu")
    assert options._process_config(None, 4) == (4, "cpu")
    assert options._process_config(4, 4) == (4, "cpu")
    with pytest.raises(click.UsageError, match="disagrees with torchrun"):
        options._process_config(2, 4)
    with pytest.raises(click.UsageError, match="power of two"):
        options._process_config(6, None)


def test_loss_and_schedule_take_the_preset_unless_overridden():
    spec = presets.PRESETS["cifar"]
    loss = options._loss_config(spec, "cifar", gamma=None)
    assert loss["loss_kwargs"]["r1_gamma"] == spec["gamma"] and loss["loss_kwargs"]["pl_weight"] == 0
    assert loss["G_opt_kwargs"] == loss["D_opt_kwargs"] and loss["G_opt_kwargs"]["lr"] == spec["lrate"]
    assert options._loss_config(spec, "cifar", gamma=0.5)["loss_kwargs"]["r1_gamma"] == 0.5
    with pytest.raises(click.UsageError, match="--gamma must be non-negative"):
        options._loss_config(spec, "cifar", gamma=-1)

    schedule = options._schedule_config(spec, "cpu", kimg=None)
    assert schedule["total_kimg"] == spec["kimg"] and "cpu_threads" not in schedule
    assert options._schedule_config(spec, "cpu", kimg=0.25)["total_kimg"] == 0.25
    assert options._schedule_config(presets.PRESETS["cpu"], "cpu", None)["cpu_threads"] == 1
    assert "cpu_threads" not in options._schedule_config(presets.PRESETS["cpu"], "cuda", None)
    with pytest.raises(click.UsageError, match="--kimg must be positive"):
        options._schedule_config(spec, "cpu", kimg=0)


def test_loader_workers_prefetch_and_refuse_negative():
    assert options._loader_config("cpu", None) == dict(pin_memory=False, num_workers=0)
    assert options._loader_config("cuda", None) == dict(pin_memory=True, num_workers=3, prefetch_factor=2)
    assert options._loader_config("cpu", 2) == dict(pin_memory=False, num_workers=2, prefetch_factor=2)
    with pytest.raises(click.UsageError, match="--workers must be at least 0"):
        options._loader_config("cpu", -1)


@pytest.mark.parametrize("aug, p, target, message", [
    ("ada", 0.5, None, "--p can only be given with --aug=fixed"),
    ("fixed", 1.5, None, "--p must be between 0 and 1, got 1.5"),
    ("fixed", 0.5, 0.6, "--target can only be given with --aug=ada"),
    ("ada", None, -0.1, "--target must be between 0 and 1, got -0.1"),
])
def test_augment_probabilities_are_checked_against_their_mode(aug, p, target, message):
    with pytest.raises(click.UsageError) as info:
        options._augment_config(aug, p, target, None)
    assert str(info.value) == message


def test_freezed_and_nhwc_are_written_into_the_network_kwargs():
    G_kwargs, D_kwargs = options._network_config(presets.PRESETS["cpu"], "cpu", fp16=False)
    options._network_options(G_kwargs, D_kwargs, freezed=3, nhwc=True)
    assert D_kwargs["block_kwargs"] == dict(freeze_layers=3, fp16_channels_last=True)
    assert G_kwargs["synthesis_kwargs"]["fp16_channels_last"] is True
    with pytest.raises(click.UsageError, match="--freezed must be non-negative"):
        options._network_options(G_kwargs, D_kwargs, freezed=-1, nhwc=False)
