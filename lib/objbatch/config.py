"""Where the API key and the service URL come from. The key is never printed, logged or stored."""

from __future__ import annotations

import os

from .common import Failure

KEYRING_SERVICE = "objlib-mistral"
KEYRING_USERNAME = "api_key"
DEFAULT_SERVER_URL = "https://api.mistral.ai"


def api_key() -> str:
    """MISTRAL_API_KEY if set, else the system keyring; a clear one-line failure if neither has it."""
    key = os.environ.get("MISTRAL_API_KEY", "").strip()
    if key:
        return key
    key = _keyring_key()
    if key:
        return key
    raise Failure(
        "no Mistral API key: set MISTRAL_API_KEY, or store it with "
        f"'keyring set {KEYRING_SERVICE} {KEYRING_USERNAME}'"
    )


def _keyring_key() -> str | None:
    try:
        import keyring
        from keyring.errors import KeyringError

        try:
            return (keyring.get_password(KEYRING_SERVICE, KEYRING_USERNAME) or "").strip() or None
        except (KeyringError, RuntimeError, OSError):
            return None  # no usable backend (headless server, cron): fall through to the clear error
    except ImportError:
        return None


def server_url() -> str:
    return os.environ.get("MISTRAL_SERVER_URL", "").strip().rstrip("/") or DEFAULT_SERVER_URL
