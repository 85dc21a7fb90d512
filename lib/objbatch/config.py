"""Where the API key, the service URL and the retry budget come from. The key is never printed, logged or
stored: it is checked for characters an HTTP header cannot carry, and masked in every message."""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import urlsplit

from .common import SECRETS, Failure

KEYRING_SERVICE = "objlib-mistral"
KEYRING_USERNAME = "api_key"
DEFAULT_SERVER_URL = "https://api.mistral.ai"
DEFAULT_RETRY_SECONDS = 900.0
UNUSABLE_IN_A_KEY = re.compile(r"[\s\x00-\x1f\x7f]")


def api_key() -> str:
    """MISTRAL_API_KEY if set, else the system keyring; a clear one-line failure if neither has it."""
    key, source = os.environ.get("MISTRAL_API_KEY", ""), "MISTRAL_API_KEY"
    if not key.strip():
        key, source = _keyring_key(), f"the keyring entry {KEYRING_SERVICE}/{KEYRING_USERNAME}"
    if not key or not key.strip():
        raise Failure(_missing_key_message())
    SECRETS.add(key)
    SECRETS.add(key.strip())
    if UNUSABLE_IN_A_KEY.search(key):
        what = "a line break" if re.search(r"[\r\n]", key) else "a space or control character"
        raise Failure(f"{source} contains {what} (a multi-line secret, or a stray newline?); set it to the key "
                      "alone, e.g. MISTRAL_API_KEY=\"$(pass show mistral | head -n 1)\"")
    if not key.isascii():  # HTTP headers are ASCII: it failed as a bare UnicodeEncodeError showing a character
        raise Failure(f"{source} contains a character that is not plain ASCII (a typographic quote or an accent "
                      "pasted with it?); set it to the key alone, as the console shows it")
    return key


def _missing_key_message() -> str:
    if keyring_usable():
        return "no Mistral API key: set MISTRAL_API_KEY, or store it in the keyring with 'make key' (bin/set-key)"
    return "no Mistral API key: set MISTRAL_API_KEY (this machine has no usable keyring for a stored key)"


def _keyring_key() -> str:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return ""
    try:
        return keyring.get_password(KEYRING_SERVICE, KEYRING_USERNAME) or ""
    except (KeyringError, RuntimeError, OSError):
        return ""  # no usable backend (headless server, cron): fall through to the clear error


def keyring_usable() -> bool:
    """Whether a real keyring backend is there to store a key in (headless servers usually have none)."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return False
    return not isinstance(keyring.get_keyring(), fail.Keyring)


def server_url() -> str:
    url = os.environ.get("MISTRAL_SERVER_URL", "").strip().rstrip("/") or DEFAULT_SERVER_URL
    parts = urlsplit(url)
    if "@" in parts.netloc:  # shown without it: a password in a URL is printed by nothing of ours
        raise Failure(f"MISTRAL_SERVER_URL ({parts.scheme}://***@{parts.netloc.rsplit('@', 1)[1]}) holds a user "
                      "name or password; remove it: the API key is the only credential objbatch sends")
    if url.endswith("/v1"):
        raise Failure(f"MISTRAL_SERVER_URL ends in /v1 ({url}); give the service's root, e.g. {DEFAULT_SERVER_URL} "
                      "(the /v1 of each call is added)")
    if parts.scheme.lower() == "http" and not loopback(parts.hostname or "") and os.environ.get(ALLOW_HTTP) != "1":
        raise Failure(f"MISTRAL_SERVER_URL {url} is plain HTTP to another machine: the API key would cross the "
                      f"network unencrypted; use https://, or set {ALLOW_HTTP}=1 for a proxy you trust")
    return url


ALLOW_HTTP = "OBJBATCH_ALLOW_HTTP"


def loopback(host: str) -> bool:
    """This machine: localhost or a loopback address (127.0.0.0/8, ::1), where plain HTTP stays local."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Fixed waits, each read from the environment when it is used, so that the tests can make them short.
WAITS = {
    "OBJBATCH_FIRST_CONTACT_SECONDS": (6.0, "before paying, a service never reached fails after this long"),
    "OBJBATCH_CLEANUP_SECONDS": (10.0, "each delete of a finished run's files is retried at most this long"),
    "OBJBATCH_WAIT_RETRY_FLOOR": (5.0, "batch-wait retries a failing service at least this long, whatever "
                                       "its --timeout"),
    "OBJBATCH_LEASE_POLL": (1.0, "a process waiting for a run's lease looks again after this long"),
    "OBJBATCH_MIN_POLL": (2.0, "the shortest wait between status checks (the service rate-limits reads)"),
    "OBJBATCH_RETRY_SECONDS": (DEFAULT_RETRY_SECONDS, "how long failing service calls are retried"),
}


def wait_seconds(name: str) -> float:
    """One of WAITS: its environment variable if set (a number of seconds, at least 0), else its default."""
    default = WAITS[name][0]
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise Failure(f"{name} must be a number of seconds (got {text!r}); unset it for the default of {default:g}")
    return value


def retry_seconds() -> float:
    """How long transient service failures are retried (OBJBATCH_RETRY_SECONDS, default 15 minutes)."""
    return wait_seconds("OBJBATCH_RETRY_SECONDS")
