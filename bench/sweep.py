"""How bench/run.py sweeps an offered rate until the target's limit is bracketed.

A sweep walks its plan's steps upward and keeps the highest rate sustained. The
plan's steps are a first guess; where they do not bracket the limit the sweep goes
on past them:

- the lowest step fails: the rate is halved until a rate passes (the limit lies
  between it and the lowest rate that failed) or the plan's floor fails too;
- the highest step passes: the rate grows by ``up`` until a step fails or the
  generator's ceiling, the highest rate the load generator is trusted to offer on
  this machine, has passed (the limit is then at or above the ceiling, unmeasured).

Pure logic: the caller gives the function that runs one step, so tests drive it
without servers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# One step: the generator's result for an offered rate, and why that step does not
# count as sustained (None when it does).
StepRunner = Callable[[int], tuple[dict[str, Any], str | None]]

UNSUPPORTED = "unsupported"  # the why a step gives when the target lacks the scenario
BRACKETED = "bracketed"  # the next rate up failed: the limit lies between
CEILING = "ceiling"  # the generator's ceiling passed: the limit is at or above it
FLOOR = "floor"  # not even the floor passed: the limit is below it


@dataclass(frozen=True)
class SweepPlan:
    steps: tuple[int, ...]  # ascending; tried first
    floor: int  # the lowest rate tried when the lowest step fails
    ceiling: int  # the generator's ceiling: never offered above
    up: float = 1.25  # growth factor past the highest step
    down: float = 0.5  # shrink factor below the lowest step

    @classmethod
    def single(cls, rate: int) -> SweepPlan:
        """One rate and nothing past it (bench/run.py --smoke)."""
        return cls(steps=(rate,), floor=rate, ceiling=rate)

    def __post_init__(self) -> None:
        if not self.steps or list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f"steps must be ascending and distinct: {self.steps}")
        if not 1 <= self.floor <= self.steps[0] or self.steps[-1] > self.ceiling:
            raise ValueError(f"need 1 <= floor <= steps <= ceiling: {self}")
        if self.up <= 1 or not 0 < self.down < 1:
            raise ValueError(f"need up > 1 and 0 < down < 1: {self}")


def rounded(rate: float) -> int:
    """Two significant digits (62,500 -> 62,000, 125 -> 120): steps a reader can quote."""
    if rate < 10:
        return max(1, int(rate))
    scale = 10 ** (int(math.log10(rate)) - 1)
    return int(rate // scale * scale)


def next_up(rate: int, plan: SweepPlan) -> int | None:
    """The step after ``rate`` past the plan's steps, None once the ceiling was tried."""
    if rate >= plan.ceiling:
        return None
    return min(plan.ceiling, max(rate + 1, rounded(rate * plan.up)))


def next_down(rate: int, plan: SweepPlan) -> int | None:
    """The step below ``rate`` under the plan's steps, None once the floor was tried."""
    if rate <= plan.floor:
        return None
    return max(plan.floor, min(rate - 1, rounded(rate * plan.down)))


def run_sweep(
    plan: SweepPlan, run_step: StepRunner, log: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """The highest rate sustained, as the result of its step, with where the limit lies.

    The result gets ``bound``: BRACKETED with ``next_rate`` and ``next_why`` (the
    lowest rate that failed, and why), or CEILING (the ceiling passed). When no rate
    passed down to the floor it is ``{"ok": False, "bound": FLOOR, ...}`` with the
    floor's failure. A step that says UNSUPPORTED (the target lacks the scenario)
    ends the sweep with ``{"ok": False, "error": UNSUPPORTED}``."""
    passed: tuple[int, dict[str, Any]] | None = None  # the highest rate sustained
    failed: tuple[int, str] | None = None  # the lowest rate not sustained

    def attempt(rate: int) -> None:
        nonlocal passed, failed
        result, why = run_step(rate)
        if why is None:
            passed = (rate, result)
        else:
            failed = (rate, why)

    for rate in plan.steps:
        attempt(rate)
        if failed is not None:
            break
    if failed is not None and failed[1] == UNSUPPORTED:
        return {"ok": False, "error": UNSUPPORTED}
    if passed is None:  # the lowest step failed: downward until a rate passes or the floor fails
        down = next_down(plan.steps[0], plan)
        while passed is None and down is not None:
            log(f"    the lowest rate failed: trying {down:,}/s")
            attempt(down)
            down = next_down(down, plan)
    elif failed is None:  # every step passed: upward until one fails or the ceiling passes
        up = next_up(plan.steps[-1], plan)
        while failed is None and up is not None:
            log(f"    every rate passed: trying {up:,}/s")
            attempt(up)
            up = next_up(up, plan)
    if passed is None:
        assert failed is not None
        return {
            "ok": False,
            "bound": FLOOR,
            "error": f"not sustained down to the floor, {failed[0]:,}/s: {failed[1]}",
        }
    if failed is None:
        return {**passed[1], "bound": CEILING, "ceiling": plan.ceiling}
    return {**passed[1], "bound": BRACKETED, "next_rate": failed[0], "next_why": failed[1]}


def bound_note(result: dict[str, Any]) -> str:
    """Where the limit lies, for the table: bracketed by the next step, or the ceiling."""
    bound = result.get("bound")
    if bound == BRACKETED:
        why = str(result["next_why"]).replace("|", "/").replace("*", "")  # a table cell, in italics
        why = why if len(why) <= 60 else why[:57] + "..."
        return f"bracketed: {result['next_rate']:,}/s failed, {why}"
    if bound == CEILING:
        ceiling = result["ceiling"]
        return f"at the generator's ceiling, {ceiling:,}/s: the limit is there or higher, unmeasured"
    return "not bracketed"
