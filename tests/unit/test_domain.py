"""The lifecycle rules: transitions and expiry with grace."""

from __future__ import annotations

import pytest

from app.domain import (
    TRANSITIONS,
    InvalidTransition,
    Sandbox,
    Status,
    check_transition,
    is_expired,
)

pytestmark = pytest.mark.unit

ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in targets]
FORBIDDEN = [(a, b) for a in Status for b in Status if b not in TRANSITIONS[a]]


@pytest.mark.parametrize(("current", "new"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_allowed_transitions_pass(current: Status, new: Status) -> None:
    check_transition(current, new)


@pytest.mark.parametrize(("current", "new"), FORBIDDEN, ids=[f"{a}->{b}" for a, b in FORBIDDEN])
def test_forbidden_transitions_raise(current: Status, new: Status) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(current, new)


def test_lifecycle_shape() -> None:
    assert TRANSITIONS[Status.ALLOCATED] == {Status.PENDING_DELETION}
    assert Status.AVAILABLE not in TRANSITIONS[Status.ALLOCATED]  # no silent revert
    assert TRANSITIONS[Status.DELETING] == {Status.PENDING_DELETION, Status.DELETION_FAILED}
    assert Status.AVAILABLE in TRANSITIONS[Status.STALE]


LEASED = Sandbox("s1", "lab-1", Status.ALLOCATED, owner="o", allocated_at=100, expires_at=200)


@pytest.mark.parametrize(
    ("sandbox", "now", "grace", "expected"),
    [
        pytest.param(LEASED, 199, 0, False, id="before-expiry"),
        pytest.param(LEASED, 200, 0, True, id="at-expiry"),
        pytest.param(LEASED, 250, 60, False, id="inside-grace"),
        pytest.param(LEASED, 260, 60, True, id="after-grace"),
        pytest.param(LEASED.evolve(status=Status.PENDING_DELETION), 999, 0, False,
                     id="released-never-expires"),
        pytest.param(LEASED.evolve(expires_at=None), 999, 0, False, id="no-expiry"),
    ],
)
def test_is_expired(sandbox: Sandbox, now: int, grace: int, expected: bool) -> None:
    assert is_expired(sandbox, now, grace) is expected


def test_evolve_copies() -> None:
    moved = LEASED.evolve(status=Status.PENDING_DELETION)
    assert moved.status is Status.PENDING_DELETION and LEASED.status is Status.ALLOCATED
