"""bench/sweep.py: a sweep goes past its planned rates until the limit is bracketed.

Driven by a stand-in for one load-generator step (a target that sustains every
rate up to a limit), so no server and no generator run here.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.run import FULL, SMOKE, cell
from bench.sweep import (
    BRACKETED,
    CEILING,
    FLOOR,
    UNSUPPORTED,
    SweepPlan,
    bound_note,
    next_down,
    next_up,
    rounded,
    run_sweep,
)


class Target:
    """Sustains every rate up to ``limit``; remembers what it was offered."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.offered: list[int] = []

    def step(self, rate: int) -> tuple[dict[str, Any], str | None]:
        self.offered.append(rate)
        result = {"ok": True, "offered_rate": rate, "delivered_rate": rate}
        return result, None if rate <= self.limit else f"p99 too high at {rate}"


P2P = SweepPlan(steps=(1000, 2000, 5000, 10000), floor=100, ceiling=20000)


def test_a_limit_inside_the_steps_is_bracketed_by_the_next_step() -> None:
    target = Target(limit=3000)
    r = run_sweep(P2P, target.step)
    assert target.offered == [1000, 2000, 5000]
    assert (r["offered_rate"], r["bound"], r["next_rate"]) == (2000, BRACKETED, 5000)
    assert r["next_why"] == "p99 too high at 5000"


def test_a_failed_lowest_step_halves_the_rate_until_one_passes() -> None:
    target = Target(limit=300)
    r = run_sweep(P2P, target.step)
    assert target.offered == [1000, 500, 250]
    assert (r["offered_rate"], r["bound"], r["next_rate"]) == (250, BRACKETED, 500)


def test_the_floor_failing_too_is_a_failure_that_names_the_floor() -> None:
    target = Target(limit=50)
    r = run_sweep(P2P, target.step)
    assert target.offered == [1000, 500, 250, 120, 100]
    assert r["ok"] is False and r["bound"] == FLOOR
    assert "100/s" in r["error"] and "p99 too high at 100" in r["error"]


def test_a_passed_highest_step_goes_on_upward_until_a_step_fails() -> None:
    target = Target(limit=13000)
    r = run_sweep(P2P, target.step)
    assert target.offered == [1000, 2000, 5000, 10000, 12000, 15000]
    assert (r["offered_rate"], r["bound"], r["next_rate"]) == (12000, BRACKETED, 15000)


def test_the_sweep_stops_at_the_generators_ceiling_and_says_so() -> None:
    target = Target(limit=float("inf"))
    r = run_sweep(P2P, target.step)
    assert target.offered == [1000, 2000, 5000, 10000, 12000, 15000, 18000, 20000]
    assert max(target.offered) == P2P.ceiling
    assert (r["offered_rate"], r["bound"], r["ceiling"]) == (20000, CEILING, 20000)
    assert "next_rate" not in r


def test_a_target_without_the_scenario_ends_the_sweep_at_once() -> None:
    offered: list[int] = []

    def step(rate: int) -> tuple[dict[str, Any], str | None]:
        offered.append(rate)
        return {"ok": False, "error": UNSUPPORTED}, UNSUPPORTED

    assert run_sweep(P2P, step) == {"ok": False, "error": UNSUPPORTED}
    assert offered == [1000]


def test_a_single_rate_plan_tries_that_rate_only() -> None:
    for limit in (0, 1000):
        target = Target(limit=limit)
        r = run_sweep(SweepPlan.single(200), target.step)
        assert target.offered == [200]
        assert r["bound"] == (CEILING if limit else FLOOR)


def test_steps_past_the_plan_are_round_and_stay_within_floor_and_ceiling() -> None:
    fanout = SweepPlan(steps=(10, 20, 300), floor=1, ceiling=400)
    assert [rounded(x) for x in (62500, 125, 2.5, 9.9, 375)] == [62000, 120, 2, 9, 370]
    assert next_up(300, fanout) == 370 and next_up(370, fanout) == 400 and next_up(400, fanout) is None
    assert next_down(10, fanout) == 5 and next_down(5, fanout) == 2 and next_down(2, fanout) == 1
    assert next_down(1, fanout) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": (), "floor": 1, "ceiling": 10},
        {"steps": (5, 3), "floor": 1, "ceiling": 10},
        {"steps": (5,), "floor": 6, "ceiling": 10},
        {"steps": (5, 20), "floor": 1, "ceiling": 10},
        {"steps": (5,), "floor": 0, "ceiling": 10},
        {"steps": (5,), "floor": 1, "ceiling": 10, "up": 1.0},
    ],
)
def test_a_plan_that_cannot_bracket_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SweepPlan(**kwargs)


@given(
    steps=st.lists(st.integers(1, 10_000), min_size=1, max_size=8, unique=True).map(sorted),
    floor_div=st.integers(1, 50),
    ceiling_mul=st.floats(1, 5),
    limit=st.floats(0, 60_000),
)
def test_any_monotone_target_is_bracketed_floored_or_at_the_ceiling(
    steps: list[int], floor_div: int, ceiling_mul: float, limit: float
) -> None:
    plan = SweepPlan(
        steps=tuple(steps), floor=max(1, steps[0] // floor_div), ceiling=int(steps[-1] * ceiling_mul)
    )
    target = Target(limit=limit)
    r = run_sweep(plan, target.step)
    assert len(set(target.offered)) == len(target.offered), "a rate offered twice"
    assert all(plan.floor <= rate <= plan.ceiling for rate in target.offered)
    if r["bound"] == FLOOR:
        assert limit < plan.floor and target.offered[-1] == plan.floor
    elif r["bound"] == CEILING:
        assert limit >= plan.ceiling and r["offered_rate"] == plan.ceiling
    else:
        assert r["bound"] == BRACKETED
        assert r["offered_rate"] <= limit < r["next_rate"]
        # nothing offered lies strictly between the two: the bracket is the tightest the sweep has
        assert not [rate for rate in target.offered if r["offered_rate"] < rate < r["next_rate"]]


def test_the_table_says_where_each_figure_lies() -> None:
    base = {"ok": True, "delivered_rate": 20000, "p50_ms": 1.0, "p99_ms": 9.0, "max_ms": 20.0}
    bracketed = {**base, "bound": BRACKETED, "next_rate": 25000, "next_why": "p99 61.0 ms >= 50 ms"}
    assert "*bracketed: 25,000/s failed, p99 61.0 ms >= 50 ms*" in cell("p2p", bracketed)
    at_ceiling = {**base, "bound": CEILING, "ceiling": 60000}
    assert "at the generator's ceiling, 60,000/s" in cell("p2p", at_ceiling)
    long_why = {**bracketed, "next_why": "failed: " + "x" * 200}
    assert len(bound_note(long_why)) < 100
    floored = {"ok": False, "bound": FLOOR, "error": "not sustained down to the floor, 100/s: 3 lost"}
    assert cell("p2p", floored) == "failed (not sustained down to the floor, 100/s: 3 lost)"


def test_the_plans_bracket_and_smoke_stays_one_low_rate() -> None:
    assert FULL["p2p"][0].floor == 100 and FULL["fanout"][0].floor == 1
    assert FULL["p2p"][0].ceiling > FULL["p2p"][0].steps[-1]
    assert FULL["fanout"][0].ceiling > FULL["fanout"][0].steps[-1]
    assert [SMOKE[s][0].steps for s in ("p2p", "fanout")] == [(200,), (20,)]
