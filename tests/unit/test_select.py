"""The selection rules (engine.select.trial) over random trial tables: whatever a search measured, the trial handed
back meets the goal, is on the Pareto front and beats the original beyond the tie band; when one could be handed
back, one is."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.select.trial import TIES, Trial, choose, dominates, improves, mark_pareto

ORIGINAL = Trial(index=-1, name="original", status="measured", metric=0.9, cosine=1.0, speedup=1.0, size_bytes=1000)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[Trial], set[int]]:
    n = draw(st.integers(0, 12))
    trials, feasible = [], set()
    for i in range(n):
        status = draw(st.sampled_from(["measured"] * 6 + ["failed"]))
        measured = status == "measured"
        metric = draw(st.floats(0.5, 0.95)) if measured else None
        # speed-ups and sizes often near the original's (the noise band), sometimes far from it
        speedup = draw(st.one_of(st.floats(0.85, 1.2), st.floats(0.2, 5.0))) if measured else None
        size = draw(st.one_of(st.integers(950, 1050), st.integers(100, 3000))) if measured else None
        bad = draw(st.sampled_from([0] * 8 + [3])) if measured else 0
        trial = Trial(
            index=i, name=f"t{i}", status=status, metric=metric, cosine=metric, speedup=speedup, size_bytes=size,
            non_finite_values=bad,
        )  # fmt: skip
        # the goal: the metric within a drop, plus another condition (cosine, top-1) the metric does not show
        if measured and not bad and metric is not None and metric >= 0.85 and draw(st.integers(0, 3)) > 0:
            feasible.add(i)
        trials.append(trial)
    return trials, feasible


@settings(max_examples=400, deadline=None)
@given(tables(), st.sampled_from(["latency", "size"]), st.booleans(), st.sampled_from([0.0, 0.0, 0.005, 0.05]))
def test_the_choice_is_feasible_on_the_front_and_better_than_the_original(table, objective, with_original, tie) -> None:
    trials, ok = table
    mark_pareto(trials, lambda t: t.index in ok)
    met = [t for t in trials if t.index in ok]
    original = ORIGINAL if with_original else None
    chosen = choose(met, objective, original, tie)
    if chosen is None:
        if original is None:
            assert not met  # without the original something that meets the goal is always handed back
        else:  # nothing on the front of the feasible trials beats the original measurably
            assert not any(t.pareto and improves(t, original, objective) for t in met)
        return
    assert chosen.index in ok and chosen.pareto and not chosen.non_finite_values
    assert not any(dominates(o, chosen) for o in met if o is not chosen)
    if original is not None:  # measurably better than the original on the objective: never a slower pick
        assert chosen.axis(objective) * (1 + TIES[objective]) < original.axis(objective)
        if objective == "latency":
            assert chosen.speedup is not None and chosen.speedup > 1 + TIES["latency"]
    # among the front's trials that beat the original, the best objective within its tie band, the best quality
    # (qualities within `tie` of the best count as equal: then the best other axis)
    pool = [t for t in met if t.pareto and (original is None or improves(t, original, objective))]
    top = min(t.axis(objective) for t in pool)
    near = [t for t in pool if t.axis(objective) <= top * (1 + TIES[objective])]
    best_quality = max(t.quality for t in near)
    assert chosen in near and chosen.quality >= best_quality - tie
    same = [t for t in near if t.quality >= best_quality - tie]
    other = "size" if objective == "latency" else "latency"
    low = min(t.axis(other) for t in same)  # then the other axis, within its own band
    assert chosen.axis(other) <= low * (1 + TIES[other])
    rivals = [t for t in same if t.axis(other) <= low * (1 + TIES[other])]
    top_quality = max(t.quality for t in rivals)  # then the best quality, then the lowest index
    assert chosen.quality == top_quality
    assert chosen.index == min(t.index for t in rivals if t.quality == top_quality and t.cosine == chosen.cosine)


@settings(max_examples=200, deadline=None)
@given(tables())
def test_the_front_is_feasible_first(table) -> None:
    trials, ok = table
    mark_pareto(trials, lambda t: t.index in ok)
    front = [t for t in trials if t.pareto]
    if ok:
        assert front and all(t.index in ok for t in front)
    assert all(t.measured and not t.non_finite_values for t in front)
    for t in front:  # no trial of the front is dominated by another feasible one
        assert not any(dominates(o, t) for o in trials if o.index in ok and o is not t)


def test_the_quality_tie_is_a_tenth_of_what_the_goal_allows_to_lose() -> None:
    from engine.select.goal import Goal

    assert Goal(0.01).quality_tie(0.9, labeled=True) == pytest.approx(0.0009)  # 1% relative of 0.9, a tenth
    assert Goal(0.02, "absolute").quality_tie(0.9, labeled=True) == pytest.approx(0.002)
    assert Goal(0.01, min_output_cosine=0.99).quality_tie(None, labeled=False) == pytest.approx(0.001)
    assert Goal(0.01, min_top1_agreement=0.95).quality_tie(None, labeled=False) == pytest.approx(0.005)
    fast_tiny = Trial(index=1, name="a", status="measured", metric=0.9925, speedup=2.0, size_bytes=270)
    fast_big = Trial(index=2, name="b", status="measured", metric=0.9929, speedup=2.05, size_bytes=650)
    assert choose([fast_tiny, fast_big], "latency", ORIGINAL, 0.001) is fast_tiny  # 0.0004 apart: equal quality
    assert choose([fast_tiny, fast_big], "latency", ORIGINAL) is fast_big  # without a tie the better metric wins
