"""Job tokens: minted per run, checked in constant time, told apart from the daemon token."""

from __future__ import annotations

from dispatcher.jobs.tokens import JobTokens


def test_token_matches_only_its_own_run() -> None:
    tokens = JobTokens("daemon-token")
    token = tokens.mint(7, "abc123")
    assert tokens.claimed_job(token) == 7
    assert tokens.matches(token, 7, "abc123")
    assert not tokens.matches(token, 7, "other1")  # a re-spawn revokes it
    assert not tokens.matches(token, 8, "abc123")
    assert not tokens.matches(token, 7, None)  # a job not running has no nonce
    assert not JobTokens("new-daemon-token").matches(token, 7, "abc123")


def test_a_changed_mac_or_id_is_refused() -> None:
    tokens = JobTokens("daemon-token")
    token = tokens.mint(7, "abc123")
    prefix, _, mac = token.rpartition(".")
    flipped = prefix + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    assert not tokens.matches(flipped, 7, "abc123")
    assert not tokens.matches(token.replace(".7.", ".8."), 8, "abc123")
    assert "daemon-token" not in token


def test_only_job_shaped_tokens_claim_a_job() -> None:
    for other in (
        "daemon-token",
        "dj1.x.mac",
        "dj1.7",
        "dj2.7.mac",
        "dj1.7.mac.more",
        "",
        "dj1..m",
    ):
        assert JobTokens.claimed_job(other) is None, other
    assert JobTokens.claimed_job("dj1.12.anything") == 12
