"""How commands reach the API: its URL and a key, from flags, from settings
(``API_URL``, ``API_KEY``), or the key saved for the tenant by
``captionq tenant key NAME --save`` (in ``API_KEYS_FILE``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from producers.cli.errors import fail
from schemas.errors import ErrorCode

if TYPE_CHECKING:
    from producers.client import CaptionClient

ApiUrlOpt = Annotated[str | None, typer.Option(help="The API's URL [default: API_URL]")]
ApiKeyOpt = Annotated[
    str | None, typer.Option(help="An API key [default: API_KEY, else the key saved for --tenant]")
]


def saved_keys(path: Path) -> dict[str, str]:
    try:
        keys = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        fail(f"cannot read the saved keys in {path}: {exc}", code=ErrorCode.invalid_request)
    return {str(k): str(v) for k, v in keys.items()} if isinstance(keys, dict) else {}


def save_key(tenant: str, key: str) -> Path:
    """Keep ``key`` as the tenant's key for this machine's commands (a file only its owner
    may read)."""
    from schemas.settings import client_settings

    path = client_settings().api_keys_file
    keys = {**saved_keys(path), tenant: key}
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(keys, out, indent=2)
    return path


def api_client(tenant: str, api_url: str | None, api_key: str | None) -> CaptionClient:
    """The SDK client these options name; ``unauthorized`` (saying how to get a key) when
    no key is given, set or saved."""
    from producers.client import CaptionClient
    from schemas.settings import client_settings

    settings = client_settings()
    key = api_key or settings.api_key or saved_keys(settings.api_keys_file).get(tenant)
    if key is None:
        fail(
            f"no API key for tenant {tenant!r}",
            code=ErrorCode.unauthorized,
            hint=f"save one with: captionq tenant key {tenant} --save (or set API_KEY)",
        )
    return CaptionClient(api_url or settings.api_url, api_key=key)
