"""CspProvider's circuit breaker and its on_call metrics hook, against the fake CSP
served over a real socket on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from app.providers.base import DeleteOutcome, DeleteResult, ProviderUnavailable
from app.providers.csp import CspProvider
from tests.fakes.csp_fixture import READ_TIMEOUT, SLOW_SEC, MakeProvider, sandbox_for
from tests.fakes.csp_server import DELETE_ROUTE, LIST_ROUTE, FakeCsp

pytestmark = pytest.mark.integration


async def open_breaker(provider: CspProvider, fake_csp: FakeCsp, failures: int) -> None:
    fake_csp.fail_next(failures, status=500)
    for _ in range(failures):
        result = await provider.delete_sandbox(sandbox_for(fake_csp.add_account("x")))
        assert result.outcome is DeleteOutcome.RETRY_LATER
    assert provider.breaker_state() == "open"


async def past_reset_timeout(fake_csp: FakeCsp, make_provider: MakeProvider) -> CspProvider:
    """A provider whose breaker opened on one failure and whose reset timeout has run out."""
    provider = make_provider(failure_threshold=1, reset_timeout_sec=0.2)
    await open_breaker(provider, fake_csp, failures=1)
    await asyncio.sleep(0.25)
    return provider


# -- circuit breaker -----------------------------------------------------------------


async def test_breaker_opens_after_consecutive_server_errors_and_rejects(
    fake_csp: FakeCsp, provider: CspProvider
) -> None:
    await open_breaker(provider, fake_csp, failures=3)

    result = await provider.delete_sandbox(sandbox_for(fake_csp.add_account("lab")))
    assert result.outcome is DeleteOutcome.RETRY_LATER
    assert result.retry_after is not None and 0 < result.retry_after <= 0.2
    with pytest.raises(ProviderUnavailable, match="breaker"):
        await provider.list_sandboxes()
    assert fake_csp.count(DELETE_ROUTE) == 3
    assert fake_csp.count(LIST_ROUTE) == 0


async def test_breaker_counts_timeouts(fake_csp: FakeCsp, make_provider: MakeProvider) -> None:
    provider = make_provider(read_timeout=READ_TIMEOUT, failure_threshold=2, reset_timeout_sec=60)
    fake_csp.delay_sec = SLOW_SEC
    for _ in range(2):
        await provider.delete_sandbox(sandbox_for(fake_csp.add_account("lab")))
    assert provider.breaker_state() == "open"


async def test_breaker_ignores_client_errors_and_needs_consecutive_failures(
    fake_csp: FakeCsp, make_provider: MakeProvider
) -> None:
    provider = make_provider(failure_threshold=2, reset_timeout_sec=60)
    answers = [500, 404, 500, 429, 500, 403, 500]
    for status in answers:
        if status == 429:
            fake_csp.rate_limit_next(1)
        elif status != 404:
            fake_csp.fail_next(1, status=status)
        await provider.delete_sandbox(sandbox_for({"id": "identity/accounts/missing"}))
        assert provider.breaker_state() == "closed"
    fake_csp.fail_next(1)
    await provider.delete_sandbox(sandbox_for({"id": "identity/accounts/missing"}))
    assert provider.breaker_state() == "open"


async def test_half_open_lets_exactly_one_probe_through_then_closes(
    fake_csp: FakeCsp, make_provider: MakeProvider
) -> None:
    provider = await past_reset_timeout(fake_csp, make_provider)
    assert provider.breaker_state() == "half_open"
    fake_csp.delay_sec = 0.1  # keep the probe in flight while the others arrive
    rows = [fake_csp.add_account(f"lab-{i}") for i in range(5)]

    results = await asyncio.gather(
        *(provider.delete_sandbox(sandbox_for(row, f"sb-{i}")) for i, row in enumerate(rows))
    )

    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes == ["deleted"] + ["retry_later"] * 4
    assert fake_csp.count(DELETE_ROUTE) == 1 + 1  # the failure that opened it, one probe
    assert provider.breaker_state() == "closed"
    fake_csp.delay_sec = 0
    assert await provider.list_sandboxes()  # closed again: calls flow


async def test_failed_probe_reopens_the_breaker(
    fake_csp: FakeCsp, make_provider: MakeProvider
) -> None:
    provider = await past_reset_timeout(fake_csp, make_provider)
    fake_csp.fail_next(1, status=503)

    probe = await provider.delete_sandbox(sandbox_for(fake_csp.add_account("lab")))
    rejected = await provider.delete_sandbox(sandbox_for(fake_csp.add_account("lab")))

    assert probe == DeleteResult(DeleteOutcome.RETRY_LATER, None, reason="HTTP 503")
    assert provider.breaker_state() == "open"
    assert rejected.outcome is DeleteOutcome.RETRY_LATER and rejected.retry_after
    assert fake_csp.count(DELETE_ROUTE) == 2


# -- metrics hook --------------------------------------------------------------------


async def test_on_call_reports_one_outcome_per_call(
    fake_csp: FakeCsp, make_provider: MakeProvider, calls: list[tuple[str, str]]
) -> None:
    provider = make_provider(failure_threshold=1, reset_timeout_sec=60)
    fake_csp.add_account("lab-1")
    fake_csp.add_account("lab-2")
    fake_csp.page_size = 1
    await provider.list_sandboxes()
    await provider.delete_sandbox(sandbox_for(fake_csp.add_account("a")))
    await provider.delete_sandbox(sandbox_for({"id": "identity/accounts/missing"}))
    fake_csp.rate_limit_next(1)
    await provider.delete_sandbox(sandbox_for(fake_csp.add_account("b")))
    fake_csp.fail_next(1, status=409)
    await provider.delete_sandbox(sandbox_for(fake_csp.add_account("c")))
    fake_csp.malformed_next(1)
    with pytest.raises(ProviderUnavailable):
        await provider.list_sandboxes()
    fake_csp.fail_next(1)
    await provider.delete_sandbox(sandbox_for(fake_csp.add_account("d")))
    await provider.delete_sandbox(sandbox_for(fake_csp.add_account("e")))

    assert calls == [
        ("list", "ok"),
        ("list", "ok"),
        ("delete", "ok"),
        ("delete", "not_found"),
        ("delete", "rate_limited"),
        ("delete", "client_error"),
        ("list", "bad_response"),
        ("delete", "server_error"),
        ("delete", "breaker_open"),
    ]


async def test_a_failing_on_call_hook_does_not_break_calls(
    fake_csp: FakeCsp, make_provider: MakeProvider
) -> None:
    def broken_hook(operation: str, outcome: str) -> None:
        raise RuntimeError("metrics backend down")

    provider = make_provider(on_call=broken_hook)
    result = await provider.delete_sandbox(sandbox_for(fake_csp.add_account("lab")))
    assert result.outcome is DeleteOutcome.DELETED
