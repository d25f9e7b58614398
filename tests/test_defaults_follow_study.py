"""The defaults of the NDA options (what ``--nda=default`` makes, and the lambda, mode and start
that apply when they are not given) are what the README's study gives by its rule, read from the
committed results file: the paper's until the study is finished and its winner also holds with
limited data (README, "Does NDA help?"; experiments/study_verdict.py)."""

import inspect
import os

from experiments import study_verdict
from experiments.study_plan import STUDY
from nda_stylegan import plugin, spec
from nda_stylegan.loss import NDALoss

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "results",
                       "nda-study.jsonl")
PAPER = {"spec": "jigsaw,stitch", "lambda": 0.25, "mode": "weighted", "start": 0.0}


def expected_defaults(verdict):
    """The defaults a verdict calls for: its recommended arm's settings once the study is finished
    and the arm also wins with limited data, else the paper's."""
    if verdict is None or not verdict.complete or not verdict.default:
        return dict(PAPER)
    options = dict(option.split("=", 1) for option in verdict.options if "=" in option)
    return {"spec": options["--nda"], "lambda": float(options.get("--nda-lambda", PAPER["lambda"])),
            "mode": options.get("--nda-mode", PAPER["mode"]), "start": float(options.get("--nda-start-kimg", 0))}


def current_defaults():
    return {"spec": spec.DEFAULT_SPEC, "lambda": plugin.DEFAULT_LAMBDA, "mode": plugin.DEFAULT_MODE,
            "start": plugin.DEFAULT_START_KIMG}


def same(a, b):
    return spec.parse_spec(a["spec"]) == spec.parse_spec(b["spec"]) and \
        {k: v for k, v in a.items() if k != "spec"} == {k: v for k, v in b.items() if k != "spec"}


def test_the_nda_defaults_are_what_the_committed_study_gives():
    verdict = study_verdict.verdict_of_file(RESULTS, STUDY)
    want, have = expected_defaults(verdict), current_defaults()
    assert same(have, want), ("the NDA defaults %r differ from what the study's rule gives, %r: update "
                              "spec.DEFAULT_SPEC and plugin.DEFAULT_* (and the README's conclusion)" % (have, want))
    # Python users of NDALoss get the same lambda and mode as the command line.
    params = inspect.signature(NDALoss.__init__).parameters
    assert (params["nda_lambda"].default, params["nda_mode"].default) == (have["lambda"], have["mode"])


def test_a_finished_study_whose_winner_holds_with_limited_data_sets_the_defaults():
    confirmed = study_verdict.Comparison("sweep-best", -10.0, 5, True)
    options = ("--nda=jigsaw", "--nda-mode=weighted", "--nda-lambda=0.5", "--nda-start-kimg=10")
    done = study_verdict.Verdict(True, 0, 50, (confirmed,), "sweep-best", options, confirmed)
    assert expected_defaults(done) == {"spec": "jigsaw", "lambda": 0.5, "mode": "weighted", "start": 10.0}
    unfinished = study_verdict.Verdict(False, 3, 50, (confirmed,), "sweep-best", options, confirmed)
    failed = study_verdict.Verdict(True, 0, 50, (confirmed,), "sweep-best", options,
                                   study_verdict.Comparison("sweep-best", -1.0, 5, False))
    assert expected_defaults(unfinished) == expected_defaults(failed) == expected_defaults(None) == PAPER
