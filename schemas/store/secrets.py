"""Secrets at rest: webhook signing secrets are stored as Fernet tokens.

The key is ``WEBHOOK_SECRETS_KEY`` (the same on every API and worker host); without
it a key file is created under the default home (one-host development only).
"""

from __future__ import annotations

import base64
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet

from schemas.settings import DEFAULT_HOME

KEY_FILE = DEFAULT_HOME / "webhook-secrets.key"


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@lru_cache(maxsize=4)
def _fernet(key: str | None) -> Fernet:
    if key is None:
        key = _dev_key(KEY_FILE)
    return Fernet(key.encode())


def _dev_key(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def encrypt(secret: str, *, key: str | None) -> str:
    return _fernet(key).encrypt(secret.encode()).decode()


def decrypt(token: str, *, key: str | None) -> str:
    return _fernet(key).decrypt(token.encode()).decode()
