"""Settings refusals, token roles and cursor tamper-evidence."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from pydantic import ValidationError

from app.api import auth
from app.api.auth import Role, TokenBook, bearer_token, token_digest, token_id
from app.config import Settings
from app.domain import InvalidInput
from app.store.cursor import CursorCodec, scope_of

pytestmark = pytest.mark.unit

GOOD_T, GOOD_A = "t" * 32, "a" * 32


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({}, "must be set outside dev mode", id="no-tokens"),
        pytest.param({"broker_api_token": "short", "broker_admin_token": GOOD_A},
                     "at least 32", id="short-token"),
        pytest.param({"broker_api_token": GOOD_T, "broker_admin_token": GOOD_T},
                     "must differ", id="same-token"),
        pytest.param({"broker_api_token": f"{GOOD_T},{GOOD_A}", "broker_admin_token": GOOD_A},
                     "must differ", id="overlap-in-rotation-list"),
        pytest.param({"broker_api_token": GOOD_T, "broker_admin_token": GOOD_A,
                      "api_base_path": "v1/"}, "API_BASE_PATH", id="bad-base-path"),
        pytest.param({"broker_api_token": "t t" * 11, "broker_admin_token": GOOD_A},
                     "without spaces", id="token-a-bearer-header-cannot-carry"),
        pytest.param({"broker_api_token": GOOD_T, "broker_admin_token": GOOD_A,
                      "lab_duration_hours": 8, "max_lease_hours": 6},
                     "LAB_DURATION_HOURS must not exceed MAX_LEASE_HOURS", id="lease-bounds"),
        pytest.param({"broker_api_token": GOOD_T, "broker_admin_token": GOOD_A,
                      "webhook_subscribers": [{"name": "ops", "url": "http://127.0.0.1:1/",
                                               "secret": "s" * 16, "events": ["nope"]}]},
                     "unknown event types", id="webhook-event-type"),
        pytest.param({"broker_api_token": GOOD_T, "broker_admin_token": GOOD_A,
                      "rate_limit_storage_uri": "bogus://:hunter2@host/0"},
                     "unknown storage scheme 'bogus'", id="rate-limit-storage"),
    ],
)
def test_production_refuses_weak_config(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(broker_env="production", **overrides)


def test_dev_mode_allows_missing_tokens_and_lists_split_on_commas() -> None:
    assert Settings(broker_env="dev").track_tokens == ()
    s = Settings(broker_api_token=f" {GOOD_T} , {'u' * 32}", broker_admin_token=GOOD_A)
    assert s.track_tokens == (GOOD_T, "u" * 32)
    assert GOOD_T not in repr(s)


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_ENV", "dev")
    monkeypatch.setenv("K_CANDIDATES", "7")
    monkeypatch.setenv("API_BASE_PATH", "/api")
    s = Settings()
    assert (s.k_candidates, s.api_base_path, s.is_dev) == (7, "/api", True)


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER a!~", "a!~"),
    (None, None), ("", None), ("Bearer", None), ("Bearer ", None), ("Basic abc", None),
    ("Bearer a b", None), ("Bearer  abc", None), ("Bearer ab\u00e9", None),
])
def test_bearer_token_is_read_one_way(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_token_book_roles() -> None:
    book = TokenBook(track=[GOOD_T, "r" * 32], admin=[GOOD_A])
    assert book.role_of(GOOD_T) is Role.TRACK
    assert book.role_of("r" * 32) is Role.TRACK
    assert book.role_of(GOOD_A) is Role.ADMIN
    assert book.role_of("nope") is None
    assert GOOD_T not in token_id(GOOD_T) and len(token_id(GOOD_T)) == 12
    assert book.identify(GOOD_A) == (Role.ADMIN, token_id(GOOD_A))
    assert book.identify("nope") is None


def test_token_identity_is_kept_per_request_for_that_token_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    book = TokenBook(track=[GOOD_T], admin=[GOOD_A])
    admin, track = (Role.ADMIN, token_id(GOOD_A)), (Role.TRACK, token_id(GOOD_T))
    digested: list[str] = []
    monkeypatch.setattr(auth, "token_digest", lambda t: digested.append(t) or token_digest(t))
    state: dict[str, object] = {}
    assert book.identify_for(GOOD_A, state) == admin
    assert book.identify_for(GOOD_A, state) == admin
    assert digested == [GOOD_A]  # the second answer came from the request's state
    assert book.identify_for("nope", state) is None  # another token is digested afresh
    assert book.identify_for(GOOD_T, state) == track
    assert digested == [GOOD_A, "nope", GOOD_T]
    assert book.identify_for(GOOD_A, {}) == admin  # a new request digests again
    assert digested[-1] == GOOD_A
    assert GOOD_T not in repr(state) and GOOD_A not in repr(state)  # no token kept


def test_cursor_round_trip_and_tampering() -> None:
    codec, scope = CursorCodec(b"k1"), scope_of("sandboxes", "available")
    cursor = codec.encode({"after": "sbx-9"}, scope)
    assert codec.decode(cursor, scope) == {"after": "sbx-9"}
    for other_codec, other_scope in ((CursorCodec(b"other"), scope), (codec, ""),
                                     (codec, scope_of("sandboxes", "stale"))):
        with pytest.raises(InvalidInput):
            other_codec.decode(cursor, other_scope)
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for bad in (flipped, "!!!", "", cursor[:10]):
        with pytest.raises(InvalidInput):
            codec.decode(bad, scope)


def test_feed_cursors_outlive_a_new_secret() -> None:
    """Webhook checkpoints are feed cursors: rotating the admin tokens the secret may be
    derived from must not strand them, nor those an earlier release signed."""
    position = {"seq": 41}
    assert CursorCodec(b"after-rotation").decode(CursorCodec(b"k1").encode(position)) == position
    body = json.dumps(position, separators=(",", ":")).encode()
    signed_before = base64.urlsafe_b64encode(
        hmac.new(b"k1", body, hashlib.sha256).digest()[:16] + body).decode().rstrip("=")
    assert CursorCodec(b"k1").decode(signed_before) == position
    flipped = signed_before[:-2] + ("A" if signed_before[-2] != "A" else "B") + signed_before[-1]
    with pytest.raises(InvalidInput):
        CursorCodec(b"k1").decode(flipped)
