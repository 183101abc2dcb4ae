"""The book's one rule for outcomes (utils.studies.verdicts.judge): holds when the interval
clears the bar, does not hold when it lies on the wrong side, inconclusive otherwise."""
import math

import pytest

from utils.studies.verdicts import (FAILS, HOLDS, INCONCLUSIVE, Verdict, judge, judge_share,
                                    report_verdicts)


@pytest.mark.parametrize("low, high, bar, side, outcome", [
    (0.1, 0.3, 0.0, ">", HOLDS), (-0.3, -0.1, 0.0, ">", FAILS),
    (-0.025, 0.02, 0.0, ">", INCONCLUSIVE),          # chapter 9's F1 difference: straddles 0
    (0.0, 0.2, 0.0, ">", INCONCLUSIVE), (-0.2, 0.0, 0.0, ">", FAILS),   # touching the bar
    (0.0, 0.2, 0.0, ">=", HOLDS), (5.0, 9.0, 10.0, "<=", HOLDS), (11, 12, 10, "<=", FAILS),
    (12, 12, 10, ">=", HOLDS), (9, 9, 10, ">=", FAILS),        # an exact count
    (math.nan, 1.0, 0.0, ">", INCONCLUSIVE), (0.5, 1.0, math.nan, ">", INCONCLUSIVE),
])
def test_the_rule_on_intervals(low, high, bar, side, outcome):
    assert judge(low, high, bar, side) == outcome


def test_a_bad_side_is_refused():
    with pytest.raises(ValueError, match="side"):
        judge(0, 1, 0, "=>")


@pytest.mark.parametrize("k, n, outcome", [
    (16, 16, HOLDS), (15, 16, INCONCLUSIVE), (9, 16, INCONCLUSIVE), (4, 16, FAILS),
    (8, 8, INCONCLUSIVE), (0, 0, INCONCLUSIVE)])
def test_a_share_of_seeds_is_judged_on_its_wilson_interval(k, n, outcome):
    """At the 0.75 threshold: 16 of 16 clears it (Wilson low 0.81), 15 of 16 does not (0.72),
    and 8 of 8 cannot (0.68): eight seeds are too few to show a 75 % share."""
    assert judge_share(k, n, 0.75)[0] == outcome


def test_a_judged_verdict_carries_its_interval_and_bar_and_passes_only_when_it_holds():
    v = Verdict.judged("x", "x > 0", 0.0002, -0.025, 0.02, 0.0)
    assert v.outcome == INCONCLUSIVE and not v.passed
    assert v.numbers == {"estimate": 0.0002, "ci_low": -0.025, "ci_high": 0.02, "bar": 0.0}
    assert v.to_dict()["outcome"] == INCONCLUSIVE
    assert Verdict("b", "b", True).outcome == HOLDS and Verdict("b", "b", False).outcome == FAILS
    with pytest.raises(ValueError, match="contradicts"):
        Verdict("c", "c", True, {}, INCONCLUSIVE)
    with pytest.raises(ValueError, match="outcome"):
        Verdict("c", "c", False, {}, "maybe")


def test_report_verdicts_enforces_each_stated_outcome():
    verdicts = [Verdict("a", "a", True), Verdict.judged("i", "i", 0.0, -1.0, 1.0, 0.0)]
    report_verdicts(verdicts, strict=True, inconclusive=("i",))
    with pytest.raises(AssertionError, match="'i': inconclusive"):
        report_verdicts(verdicts, strict=True)
    with pytest.raises(AssertionError, match="'i': inconclusive"):
        report_verdicts(verdicts, strict=True, not_reproduced=("i",))
    table = report_verdicts(verdicts, strict=False)
    assert list(table["outcome"]) == [HOLDS, INCONCLUSIVE]


def stored_share_verdicts():
    """The share-of-seeds verdicts of chapters 1-4 on their stored sweeps."""
    from utils.book.sweeps import load_sweep
    from utils.studies.alignment import alignment_verdicts, figure6_statements
    from utils.studies.crossing import figure5_statements, stricter_verdicts
    from utils.studies.ensemble import ensemble_verdicts
    from utils.studies.onset import figure4_statements

    fig5, fig6 = load_sweep("02_lambda_max_crossing"), load_sweep("03_gradient_alignment")
    fig4 = load_sweep("04_spike_onset")
    adam, gd = fig4[fig4["optimizer"] == "adam"], fig4[fig4["optimizer"] == "gd"]
    statements = figure5_statements(fig5) + figure6_statements(fig6) + figure4_statements(adam, gd)
    return (ensemble_verdicts(load_sweep("01_v_decay"), "01_v_decay")
            + [s.verdict() for s in statements] + stricter_verdicts(fig5)
            + alignment_verdicts(fig6))


def test_the_stored_share_verdicts_of_chapters_1_to_4_follow_the_one_rule():
    """Every share-of-seeds verdict carries k, n's interval and its bar, and its outcome is the
    rule's on them: none shows "holds" with an interval that reaches below its bar."""
    for v in stored_share_verdicts():
        n = v.numbers
        low = n["share_ci_low"] if "share_ci_low" in n else n["ci_low"]
        high = n["share_ci_high"] if "share_ci_high" in n else n["ci_high"]
        assert v.outcome == judge(low, high, n["bar"], ">="), v.name
        assert v.outcome != HOLDS or low >= n["bar"], v.name
