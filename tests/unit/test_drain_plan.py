"""The drain's schedule: every session once, a user's sessions together, spread over the period."""

from __future__ import annotations

import random

from stompgate.drain import BATCH_SPACING_S, plan


def sessions(users: int, per_user: int, anonymous: int) -> list[tuple[str | None, int]]:
    named = [(f"u{u}", i) for u in range(users) for i in range(per_user)]
    return named + [(None, i) for i in range(anonymous)]


def user_of(session: tuple[str | None, int]) -> str | None:
    return session[0]


def test_every_session_once_and_a_users_sessions_in_one_batch() -> None:
    all_ = sessions(users=30, per_user=3, anonymous=7)
    schedule = plan(all_, user_of, 10.0, random.Random(5))
    closed = [s for _at, batch in schedule for s in batch]
    assert sorted(closed, key=repr) == sorted(all_, key=repr)
    batch_of = {s: i for i, (_at, batch) in enumerate(schedule) for s in batch}
    for u in range(30):
        assert len({batch_of[(f"u{u}", i)] for i in range(3)}) == 1
    anonymous_batches = {batch_of[(None, i)] for i in range(7)}
    assert len(anonymous_batches) > 1  # sessions without a user are not one group


def test_batches_spread_over_the_period_in_order_and_never_empty() -> None:
    schedule = plan(sessions(200, 1, 0), user_of, 10.0, random.Random(1))
    times = [at for at, _batch in schedule]
    assert len(schedule) == round(10.0 / BATCH_SPACING_S)
    assert times == sorted(times)
    assert 0 <= times[0] and times[-1] <= 10.0
    assert times[-1] - times[0] > 10.0 / 2
    assert all(batch for _at, batch in schedule)


def test_few_sessions_get_a_batch_each_and_no_period_closes_all_at_once() -> None:
    assert len(plan(sessions(3, 1, 0), user_of, 10.0, random.Random(2))) == 3
    [(at, batch)] = plan(sessions(50, 2, 5), user_of, 0.0, random.Random(3))
    assert at == 0.0 and len(batch) == 105
    assert plan([], user_of, 10.0, random.Random(4)) == []
