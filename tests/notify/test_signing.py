"""Standard Webhooks signing, against the reference library's test vector."""

from __future__ import annotations

from dispatcher.notify.signing import parse_secret, sign


def test_sign_matches_the_standard_webhooks_reference_vector() -> None:
    # From the standard-webhooks reference library's tests (libraries/python/tests).
    key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert (
        sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
