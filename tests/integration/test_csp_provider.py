"""CspProvider against a fake CSP served over a real socket on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from app.providers.base import (
    DeleteOutcome,
    DeleteResult,
    Provider,
    ProviderSandbox,
    ProviderUnavailable,
)
from app.providers.csp import CspProvider
from tests.fakes.csp_fixture import READ_TIMEOUT, SLOW_SEC, MakeProvider, sandbox_for
from tests.fakes.csp_server import DELETE_ROUTE, LIST_ROUTE, FakeCsp, closed_port

pytest_plugins = ["tests.fakes.csp_fixture"]
pytestmark = pytest.mark.integration

def exception_text(exc: BaseException) -> str:
    """str() and repr() of an exception and all its causes, for leak checks."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        parts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


# -- listing -------------------------------------------------------------------------


async def test_list_keeps_active_sandboxes_and_maps_fields(
    fake_csp: FakeCsp, provider: CspProvider
) -> None:
    full = fake_csp.add_account("lab-01", uuid="u-1", csp_id="c-1", sfdc_account_id="S1")
    epoch = fake_csp.add_account("lab-02", uuid="u-2", csp_id=None, created_at=1_700_000_000)
    fake_csp.add_account("lab-03", uuid="u-3", created_at="not a date")
    fake_csp.add_account("prod", account_type="customer")
    fake_csp.add_account("gone", state="deleted")
    fake_csp.add_account("", uuid="u-noname")
    fake_csp.add_row({"name": "no-id", "account_type": "sandbox", "state": "active"})
    fake_csp.add_row({"id": "identity/accounts/u-4", "account_type": "sandbox", "state": "active"})
    for dots in (".", ".."):  # would turn the later DELETE into one on a parent path
        fake_csp.add_account(f"dots-{dots}", uuid=dots)

    listed = await provider.list_sandboxes()

    assert isinstance(provider, Provider)
    assert fake_csp.count(LIST_ROUTE) == 1  # a body without `next` is the last page
    assert listed == [
        ProviderSandbox("c-1", "lab-01", full["id"], "S1", 1_714_564_800),
        ProviderSandbox(
            epoch["id"], "lab-02", "identity/accounts/u-2", "SFDC-lab-02", 1_700_000_000
        ),
        ProviderSandbox(
            "csp-u-3", "lab-03", "identity/accounts/u-3", "SFDC-lab-03", created_at=None
        ),
    ]


async def test_created_at_accepts_iso_and_epoch_forms(
    fake_csp: FakeCsp, make_provider: MakeProvider
) -> None:
    noon = 1_714_564_800  # 2024-05-01T12:00:00Z
    forms: dict[str, object] = {
        "iso-z": "2024-05-01T12:00:00Z",
        "iso-offset": "2024-05-01T14:00:00+02:00",
        "iso-naive-is-utc": "2024-05-01T12:00:00",
        "epoch-float": noon + 0.9,
        "epoch-string": str(noon),
        "bool": True,
        "null": None,
        "empty": "",
        "list": [noon],
        "nan": "nan",
    }
    for name, value in forms.items():
        fake_csp.add_account(name, created_at=value)
    provider = make_provider(on_call=None)

    parsed = {s.name: s.created_at for s in await provider.list_sandboxes()}

    readable = {"iso-z", "iso-offset", "iso-naive-is-utc", "epoch-float", "epoch-string"}
    assert parsed == {name: noon if name in readable else None for name in forms}


async def test_list_follows_next_links_across_pages(
    fake_csp: FakeCsp, provider: CspProvider
) -> None:
    names = [f"lab-{i:02d}" for i in range(5)]
    for name in names:
        fake_csp.add_account(name)
    fake_csp.page_size = 2

    listed = await provider.list_sandboxes()

    assert [s.name for s in listed] == names
    assert fake_csp.count(LIST_ROUTE) == 3


async def test_list_empty(fake_csp: FakeCsp, provider: CspProvider) -> None:
    fake_csp.add_account("lab-01")
    fake_csp.empty_list = True
    assert await provider.list_sandboxes() == []


async def test_every_request_carries_the_token_and_reuses_one_connection(
    fake_csp: FakeCsp, provider: CspProvider
) -> None:
    rows = [fake_csp.add_account(f"lab-{i}") for i in range(3)]
    fake_csp.page_size = 1
    await provider.list_sandboxes()
    for i, row in enumerate(rows):
        await provider.delete_sandbox(sandbox_for(row, f"sb-{i}"))

    assert fake_csp.auth_headers == [f"Token {fake_csp.token}"] * 6
    assert fake_csp.connections == 1


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda f: f.fail_next(1, status=500), id="500"),
        pytest.param(lambda f: f.fail_next(1, status=403), id="403"),
        pytest.param(lambda f: f.rate_limit_next(1), id="429"),
        pytest.param(lambda f: f.malformed_next(1), id="malformed-json"),
        pytest.param(lambda f: f.fail_next(1, status=503, after=1), id="second-page-503"),
        pytest.param(lambda f: f.respond_next(1, b'{"results": "x"}'), id="no-results-list"),
        pytest.param(lambda f: f.respond_next(1, b'{"results": [], "next": 7}'), id="bad-next"),
        pytest.param(
            lambda f: f.respond_next(1, json.dumps({"results": [], "next": f.list_url}).encode()),
            id="next-loops",
        ),
    ],
)
async def test_list_is_unavailable_rather_than_partial(
    fake_csp: FakeCsp, provider: CspProvider, fault: Callable[[FakeCsp], None]
) -> None:
    for i in range(3):
        fake_csp.add_account(f"lab-{i}")
    fake_csp.page_size = 2
    fault(fake_csp)
    with pytest.raises(ProviderUnavailable):
        await provider.list_sandboxes()


async def test_list_refuses_a_next_link_to_another_host(
    fake_csp: FakeCsp, provider: CspProvider
) -> None:
    for i in range(3):
        fake_csp.add_account(f"lab-{i}")
    fake_csp.page_size = 1
    fake_csp.next_origin = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ProviderUnavailable, match="another host"):
        await provider.list_sandboxes()
    assert fake_csp.count(LIST_ROUTE) == 1


@pytest.mark.parametrize("scenario", ["wrong-token", "server-error", "timeout", "refused"])
async def test_errors_never_contain_the_token(
    fake_csp: FakeCsp, make_provider: MakeProvider, scenario: str
) -> None:
    token = "sekrit-token-that-must-not-leak-42"
    fake_csp.token = token if scenario != "wrong-token" else "the-server-expects-another"
    base_url = fake_csp.base_url
    if scenario == "refused":
        base_url = f"http://127.0.0.1:{closed_port()}/csp/api"
    elif scenario == "server-error":
        fake_csp.fail_next(1)
    elif scenario == "timeout":
        fake_csp.delay_sec = SLOW_SEC
    provider = make_provider(base_url=base_url, api_token=token, read_timeout=READ_TIMEOUT)

    expected = {"wrong-token": "HTTP 401", "server-error": "HTTP 500"}.get(scenario, scenario)
    with pytest.raises(ProviderUnavailable, match=expected.replace("refused", "error")) as caught:
        await provider.list_sandboxes()
    result = await provider.delete_sandbox(sandbox_for(fake_csp.add_account("lab")))

    assert token not in exception_text(caught.value)
    assert token not in repr(result)


# -- deleting ------------------------------------------------------------------------


async def test_delete_removes_the_account_by_uuid(fake_csp: FakeCsp, provider: CspProvider) -> None:
    keep = fake_csp.add_account("keep", uuid="u-keep")
    target = fake_csp.add_account("target", uuid="u-target")

    result = await provider.delete_sandbox(sandbox_for(target))

    assert result == DeleteResult(DeleteOutcome.DELETED)
    assert fake_csp.rows == [keep]


def _later(status: int, retry_after: float | None = None) -> DeleteResult:
    return DeleteResult(DeleteOutcome.RETRY_LATER, retry_after, f"HTTP {status}")


async def test_an_answer_that_trickles_in_times_out_as_a_whole(
    fake_csp: FakeCsp, make_provider: MakeProvider, calls: list[tuple[str, str]]
) -> None:
    """Each byte beats the read timeout, the whole answer would take ~100x longer: the
    call still ends at connect + read timeout (a half-open probe must not hang)."""
    fake_csp.add_account("lab")
    fake_csp.trickle_sec = READ_TIMEOUT / 2
    provider = make_provider(read_timeout=READ_TIMEOUT, connect_timeout=READ_TIMEOUT)
    with pytest.raises(ProviderUnavailable, match="timeout"):
        await provider.list_sandboxes()
    assert calls == [("list", "timeout")]


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        pytest.param(404, None, DeleteResult(DeleteOutcome.ALREADY_GONE), id="404"),
        pytest.param(410, None, DeleteResult(DeleteOutcome.ALREADY_GONE), id="410"),
        pytest.param(502, None, _later(502), id="502"),
        pytest.param(503, "7200", _later(503, 7200.0), id="503-retry-after"),
        # Not a reason to give a deletion up at the first answer (a revoked token, a
        # conflict, a request the portal cannot take now): retried, attempts counted.
        pytest.param(403, None, _later(403), id="403"),
        pytest.param(401, None, _later(401), id="401"),
        pytest.param(409, "60", _later(409, 60.0), id="409-retry-after"),
        pytest.param(400, None, _later(400), id="400"),
    ],
)
async def test_delete_maps_status_to_outcome(
    fake_csp: FakeCsp, provider: CspProvider, status: int, retry_after: str | None,
    expected: DeleteResult,
) -> None:
    if status == 401:
        fake_csp.token = "rotated-away-from-the-provider"
    elif status != 404:
        fake_csp.fail_next(1, status=status, retry_after=retry_after)
    row = {"id": "identity/accounts/never-existed"}
    assert await provider.delete_sandbox(sandbox_for(row)) == expected
    assert fake_csp.count(DELETE_ROUTE) == 1


@pytest.mark.parametrize("external_id", [None, "identity/accounts/..", "identity/accounts/."])
async def test_delete_without_a_usable_external_id_fails_without_a_request(
    fake_csp: FakeCsp, provider: CspProvider, external_id: str | None
) -> None:
    row = None if external_id is None else {"id": external_id}
    result = await provider.delete_sandbox(sandbox_for(row))
    assert result.outcome is DeleteOutcome.FAILED
    assert result.reason
    assert sum(fake_csp.requests.values()) == 0


def _http_date_in(seconds: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        pytest.param("2", 2.0, 2.0, id="seconds"),
        pytest.param(None, 30.0, 30.0, id="missing"),
        pytest.param("soon-ish", 30.0, 30.0, id="garbage"),
        pytest.param("-5", 30.0, 30.0, id="negative"),
        pytest.param("http-date:120", 100.0, 120.0, id="http-date"),
        # Absurd answers wait a day at most (and never overflow a timestamp).
        pytest.param("31536000000", 86400.0, 86400.0, id="a-thousand-years"),
        pytest.param("1e300", 86400.0, 86400.0, id="1e300"),
        pytest.param("inf", 30.0, 30.0, id="infinite"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", 86400.0, 86400.0, id="year-9999"),
    ],
)
async def test_delete_rate_limited_honours_retry_after(
    fake_csp: FakeCsp, provider: CspProvider, header: str | None, low: float, high: float
) -> None:
    if header and header.startswith("http-date:"):  # dated now, not at collection time
        header = _http_date_in(int(header.split(":")[1]))
    fake_csp.rate_limit_next(1, retry_after=header)
    result = await provider.delete_sandbox(sandbox_for(fake_csp.add_account("lab")))
    assert result.outcome is DeleteOutcome.RETRY_LATER
    assert result.retry_after is not None
    assert low <= result.retry_after <= high


@pytest.mark.parametrize("scenario", ["timeout", "error"])
async def test_delete_without_an_answer_retries_with_caller_backoff(
    fake_csp: FakeCsp, make_provider: MakeProvider, calls: list[tuple[str, str]], scenario: str
) -> None:
    fake_csp.delay_sec = SLOW_SEC
    base_url = fake_csp.base_url if scenario == "timeout" else f"http://127.0.0.1:{closed_port()}"
    provider = make_provider(base_url=base_url, read_timeout=READ_TIMEOUT)
    result = await provider.delete_sandbox(sandbox_for(fake_csp.add_account("lab")))
    assert result.outcome is DeleteOutcome.RETRY_LATER
    assert result.retry_after is None
    assert calls == [("delete", scenario)]


async def test_delete_after_close_does_not_raise(fake_csp: FakeCsp, provider: CspProvider) -> None:
    await provider.close()
    result = await provider.delete_sandbox(sandbox_for(fake_csp.add_account("lab")))
    assert result.outcome is DeleteOutcome.RETRY_LATER
    assert fake_csp.count(DELETE_ROUTE) == 0
