"""Standard Webhooks signing: ``whsec_`` secrets decoded and checked, and ``v1`` signatures.

See https://www.standardwebhooks.com/. Error messages never contain the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from dispatcher.errors import InvalidInput

SECRET_MIN_BYTES = 24  # Standard Webhooks: "at least 24 bytes", at most 64
SECRET_MAX_BYTES = 64


def parse_secret(secret: str) -> bytes:
    """Decode a Standard Webhooks secret ``whsec_<base64>`` to its key bytes.

    Padding may be left out. The key must be 24 to 64 bytes (the spec's range).
    The error message never contains the secret.
    """
    secret = secret.strip()
    if not secret.startswith("whsec_"):
        raise InvalidInput("webhook secret must be 'whsec_' followed by base64, or 'env:NAME'")
    encoded = secret[len("whsec_") :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("webhook secret is not valid base64 after 'whsec_'") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise InvalidInput(
            f"webhook secret must decode to {SECRET_MIN_BYTES}-{SECRET_MAX_BYTES} bytes "
            f"(this one has {len(key)})"
        )
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``v1`` signature: ``v1,<base64(HMAC-SHA256(key, "id.ts.body"))>``."""
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def resolve_secret(secret: str, environ: Mapping[str, str]) -> bytes:
    """The key bytes of a target's secret; ``env:NAME`` is looked up in ``environ``."""
    if secret.startswith("env:"):
        name = secret[4:]
        value = environ.get(name)
        if not value:
            raise InvalidInput(
                f"webhook secret variable {name} is not set in the daemon's environment"
            )
        try:
            return parse_secret(value)
        except InvalidInput as exc:
            raise InvalidInput(f"{exc.message} (from env:{name})") from None
    return parse_secret(secret)
