"""The --nda spec language: parsing, canonical formatting, slugs and one-line errors."""

import pytest

from nda_stylegan.spec import (check_spec_fits, check_spec_fits_config, format_spec, normalize_spec, parse_spec,
                               parse_value, spec_slug)


@pytest.mark.parametrize("text, expected", [
    ("jigsaw", [("jigsaw", {}, 1.0)]),
    ("jigsaw,stitch", [("jigsaw", {}, 1.0), ("stitch", {}, 1.0)]),
    ("jigsaw(k=4):3,cutout(size=0.25):1", [("jigsaw", {"k": 4}, 3.0), ("cutout", {"size": 0.25}, 1.0)]),
    (" jigsaw ( k = 4 ) : 0.5 , stitch ", [("jigsaw", {"k": 4}, 0.5), ("stitch", {}, 1.0)]),
    ("cutout(size=(0.25, 0.5)):2,rotate(angles=(90,270))",
     [("cutout", {"size": (0.25, 0.5)}, 2.0), ("rotate", {"angles": (90, 270)}, 1.0)]),
    ("stitch(orientation=vertical),stitch(orientation='image')",
     [("stitch", {"orientation": "vertical"}, 1.0), ("stitch", {"orientation": "image"}, 1.0)]),
    ("mixup(alpha=2.5e1, per_image=True),cutmix(per_image=false)",
     [("mixup", {"alpha": 25.0, "per_image": True}, 1.0), ("cutmix", {"per_image": False}, 1.0)]),
    ("rotate(angles=[180])", [("rotate", {"angles": (180,)}, 1.0)]),
    ("jigsaw:1e-2", [("jigsaw", {}, 0.01)]),
])
def test_good_specs(text, expected):
    parsed = parse_spec(text)
    assert parsed == expected
    assert all(type(w) is float for _, _, w in parsed)
    assert parse_spec(format_spec(parsed)) == parsed  # canonical text parses back to the same


def test_canonical_format_and_slug():
    parsed = parse_spec("cutout(size=0.25):1, jigsaw(k=4):3")
    assert format_spec(parsed) == "cutout(size=0.25),jigsaw(k=4):3"
    assert format_spec(parse_spec("mixup(per_image=true,alpha=2)")) == "mixup(alpha=2,per_image=true)"
    assert format_spec(parse_spec("jigsaw:2.5")) == "jigsaw:2.5"
    assert spec_slug("jigsaw,stitch") == "jigsaw-stitch"
    assert spec_slug("jigsaw(k=4):3,cutout") == "jigsaw_k4-cutout"
    slug = spec_slug("cutout(size=(0.25,0.5)),stitch(orientation='vertical')")
    assert slug == "cutout_size0.25_0.5-stitch_orientationvertical"
    assert all(ch.isalnum() or ch in "._-" for ch in slug)


def test_values():
    assert parse_value("4") == 4 and type(parse_value("4")) is int
    assert parse_value("-0.5") == -0.5
    assert parse_value("TRUE") is True and parse_value("false") is False
    assert parse_value("horizontal") == "horizontal"
    assert parse_value("'a, b'") == "a, b"
    assert parse_value("(1, 2.5, 'x')") == (1, 2.5, "x")
    for bad in ("{1: 2}", "(1, (2, 3))", "1 2", "@", "None"):
        with pytest.raises(ValueError, match="cannot read"):
            parse_value(bad)


@pytest.mark.parametrize("text, pattern", [
    ("", r"empty NDA spec; name at least one negative \(cutmix, cutout, jigsaw, mixup, mosaic, rotate, stitch\)"),
    ("   ", r"empty NDA spec"),
    ("jigsw", r"unknown negative 'jigsw'; available: cutmix, cutout, jigsaw, mixup, mosaic, rotate, stitch"),
    ("jigsaw(q=2)", r"jigsaw: unknown parameter q; allowed: k"),
    ("jigsaw(k=2.5)", r"k=2.5 is not allowed; use an int in \[2, 64\].*in NDA spec entry 'jigsaw\(k=2.5\)'"),
    ("jigsaw(k=true)", r"k=True is not allowed"),
    ("jigsaw:0", r"bad weight '0'.*positive number"),
    ("jigsaw:-1,stitch", r"bad weight '-1'"),
    ("jigsaw:x", r"bad weight 'x'"),
    ("jigsaw:inf", r"bad weight 'inf'"),
    ("jigsaw:1e308,stitch:1e308", r"weights add up to more than the largest float"),
    ("jigsaw:1e-300,stitch:1e300", r"weight 1e-300 of jigsaw is too small next to the others"),
    ("jigsaw(k=4", r"unbalanced '\('"),
    ("jigsaw)", r"unbalanced '\)'"),
    ("stitch(orientation='up)", r"unclosed quote"),
    ("jigsaw,,stitch", r"empty entry.*stray comma"),
    ("jigsaw,", r"empty entry"),
    ("jigsaw(k)", r"bad parameter 'k'.*name=value"),
    ("jigsaw(k=)", r"bad parameter 'k='"),
    ("jigsaw(k=2,k=3)", r"parameter 'k' given twice"),
    ("jigsaw(k=@)", r"cannot read '@' as the value of k"),
    ("jigsaw(k=4)x", r"cannot read NDA spec entry"),
    ("stitch(orientation=diag)", r"one of 'batch', 'image', 'horizontal', 'vertical'"),
    ("rotate(angles=(45,))", r"a non-empty tuple of 90, 180, 270"),
    ("cutout(size=(0.5,0.2))", r"a number or a \(low, high\) pair in \(0, 1\]"),
    ("mixup(alpha=0)", r"alpha=0 is not allowed; use a number in \(0, "),
])
def test_bad_specs_give_one_line_errors(text, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        parse_spec(text)
    assert "\n" not in str(info.value)


def test_non_string_and_list_forms():
    with pytest.raises(ValueError, match="must be a string"):
        parse_spec(None)
    assert normalize_spec(["jigsaw", ("cutout", {"size": 0.5}), ("stitch", {}, 2)]) == [
        ("jigsaw", {}, 1.0), ("cutout", {"size": 0.5}, 1.0), ("stitch", {}, 2.0)]
    assert format_spec([("jigsaw", {"k": 4}, 3)]) == "jigsaw(k=4):3"
    with pytest.raises(ValueError, match="weight of negative 'jigsaw' must be a positive number"):
        normalize_spec([("jigsaw", {}, -1)])
    with pytest.raises(ValueError, match="non-empty"):
        normalize_spec([])
    with pytest.raises(ValueError, match="unknown negative 'nope'"):
        normalize_spec(["nope"])


def test_weights_that_overflow_are_refused_in_list_form_too():
    with pytest.raises(ValueError, match="add up to more than the largest float"):
        normalize_spec([("jigsaw", {}, 1e308), ("stitch", {}, 1e308)])
    assert parse_spec("jigsaw:1e308,stitch:1") == [("jigsaw", {}, 1e308), ("stitch", {}, 1.0)]  # finite sum: fine


@pytest.mark.parametrize("spec, height, width, batch, pattern", [
    ("jigsaw(k=3)", 32, 32, None, r"jigsaw with k=3 needs height and width divisible by 3, got 32x32.*'jigsaw\(k=3\)'"),
    ("jigsaw,jigsaw(k=4)", 34, 34, None, r"k=4 .* got 34x34"),
    ("mosaic(k=8)", 4, 4, None, r"mosaic with k=8 needs images at least 8 pixels per side"),
    ("rotate(angles=(90,))", 16, 32, None, r"not square"),
    ("jigsaw,stitch", 32, 32, 1, r"stitch pairs each image with another one.*batch per process is 1"),
    ("mixup", 32, 32, 1, r"mixup pairs each image"),
])
def test_a_spec_is_checked_against_the_image_size_and_batch(spec, height, width, batch, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        check_spec_fits(spec, height, width, batch=batch)
    assert "\n" not in str(info.value)


def test_specs_that_fit_pass_and_a_config_gives_size_and_batch():
    check_spec_fits("jigsaw(k=3),stitch,rotate", 48, 48, batch=2)
    check_spec_fits("jigsaw,cutout,rotate(angles=(180,))", 16, 32, batch=1)
    config = {"training_set_kwargs": {"resolution": 32}, "batch_gpu": 4}
    check_spec_fits_config("jigsaw(k=4)", config)
    with pytest.raises(ValueError, match="divisible by 3"):
        check_spec_fits_config("jigsaw(k=3)", config)
    with pytest.raises(ValueError, match="batch per process is 1"):
        check_spec_fits_config("cutmix", dict(config, batch_gpu=1))
    check_spec_fits_config("jigsaw(k=3)", {"loss_kwargs": {}})  # size not known yet: nothing to check
    check_spec_fits_config(None, config)  # no negatives
