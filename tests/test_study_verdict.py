"""The study's rule for the recommendation and the defaults (experiments/study_verdict.py), on
synthetic results files: which NDA arms win, which one is recommended, whether the limited-data
part makes it the default, and when the outcome stops being provisional."""

import pytest

from experiments import study_plan, study_verdict
from test_nda_study import synthetic_results

ARMS = {"baseline": [], "nda-weighted": ["--nda=jigsaw,stitch", "--nda-mode=weighted"],
        "nda-jigsaw": ["--nda=jigsaw", "--nda-mode=weighted"], "reweight-only": ["--nda-mode=reweight"],
        "nda-off": ["--nda=none"]}


def plan(main_arms, limited_arms, seeds=(0, 1, 2, 3, 4)):
    part = {"kimg": 50, "snap": 5, "eval_kimg": [50], "seeds": list(seeds)}
    return study_plan.study_from_dict({
        "metrics": [{"name": study_plan.FD_METRIC}, {"name": "nda_auroc"}],
        "parts": {"main": dict(part, arms=[[a, ARMS[a]] for a in main_arms]),
                  "limited": dict(part, arms=[[a, ARMS[a]] for a in limited_arms], options=["--subset=2000"])}})


def results(tmp_path, main, limited, seeds=range(5)):
    """main / limited: {arm: FD shift vs the baseline} (noise sd 0.3 per value)."""
    path = str(tmp_path / "results.jsonl")
    for part, shifts, base in (("main", main, 0), ("limited", limited, 7)):
        synthetic_results(path, arms=tuple(shifts), shift=tuple(shifts.values()), part=part, seeds=seeds,
                          kimgs=(50,), seed_base=base)
    return path


def test_the_largest_winning_improvement_is_recommended_and_the_limited_part_makes_it_the_default(tmp_path):
    main = {"baseline": 0.0, "nda-weighted": -2.0, "nda-jigsaw": -4.0, "reweight-only": -9.0, "nda-off": -9.0}
    path = results(tmp_path, main, {"baseline": 0.0, "nda-jigsaw": -3.0})
    study = plan(list(main), ["baseline", "nda-jigsaw"])
    v = study_verdict.verdict_of_file(path, study)
    # reweight-only and --nda=none won by more, but make no negatives: they are not NDA settings.
    assert [c.arm for c in v.winners] == ["nda-jigsaw", "nda-weighted"]
    assert v.recommended == "nda-jigsaw" and v.options == ("--nda=jigsaw", "--nda-mode=weighted")
    assert v.confirmed.wins and v.default and v.complete and v.runs_left == 0
    text = "\n".join(study_verdict.lines(v))
    assert "Every planned run is finished" in text and "Provisional" not in text
    assert "`nda-jigsaw` (mean difference -3." in text and "that is `--nda=jigsaw --nda-mode=weighted`" in text
    assert "its settings are the default of the NDA options" in text
    unfinished = study_verdict.Verdict(**dict(v.__dict__, complete=False, runs_left=3))
    assert "its settings would be the default of the NDA options" in "\n".join(study_verdict.lines(unfinished))


def test_a_winner_that_fails_in_the_limited_part_stays_a_recommendation(tmp_path):
    main = {"baseline": 0.0, "nda-jigsaw": -4.0}
    path = results(tmp_path, main, {"baseline": 0.0, "nda-jigsaw": 0.0})
    v = study_verdict.verdict_of_file(path, plan(list(main), list(main)))
    assert v.recommended == "nda-jigsaw" and not v.confirmed.wins and not v.default
    assert "it stays a recommendation, and the paper's defaults stay the defaults" in "\n".join(study_verdict.lines(v))


def test_a_winner_not_run_with_limited_data_is_not_a_default_and_unfinished_runs_are_provisional(tmp_path):
    main = {"baseline": 0.0, "nda-jigsaw": -4.0}
    path = results(tmp_path, main, {"baseline": 0.0})
    v = study_verdict.verdict_of_file(path, plan(list(main), ["baseline", "nda-weighted"]))
    assert v.recommended == "nda-jigsaw" and v.confirmed is None and not v.default
    assert not v.complete and v.runs_left == 5  # limited/nda-weighted, 5 seeds
    text = "\n".join(study_verdict.lines(v))
    assert "**Provisional**: 5 planned runs are not finished yet" in text
    assert "has no paired runs there yet, so it is not the default" in text


@pytest.mark.parametrize("shift,seeds", [(4.0, range(5)), (-4.0, range(2))])
def test_no_winner_when_worse_or_with_too_few_seeds(tmp_path, shift, seeds):
    main = {"baseline": 0.0, "nda-jigsaw": shift}
    path = results(tmp_path, main, {"baseline": 0.0}, seeds=seeds)
    v = study_verdict.verdict_of_file(path, plan(list(main), ["baseline"], seeds=tuple(seeds)))
    assert v.winners == () and v.recommended is None and not v.default
    assert "- Recommendation: none; the paper's defaults stay" in "\n".join(study_verdict.lines(v))


def test_which_options_make_negatives():
    assert study_verdict.makes_negatives(["--nda=jigsaw", "--nda-lambda=0.5"])
    assert not study_verdict.makes_negatives(["--nda=None"]) and not study_verdict.makes_negatives(["--nda=off"])
    assert not study_verdict.makes_negatives(["--nda-mode=reweight", "--nda-lambda=0.25"])
    assert not study_verdict.makes_negatives([])


def test_a_plan_without_the_rules_parts_has_no_verdict(tmp_path):
    path = str(tmp_path / "results.jsonl")
    synthetic_results(path)
    study = study_plan.study_from_dict({"parts": {"main": {"kimg": 50, "snap": 5, "eval_kimg": [50], "seeds": [0],
                                                           "arms": [["baseline", []]]}}})
    assert study_verdict.verdict_of_file(path, study) is None and study_verdict.lines(None) == []
