"""set-key (`make key`): store the Mistral API key in the system keyring, after checking it works.

The key is read without echo from the terminal (or one line from stdin in a script), checked for characters
an HTTP header cannot carry, tried with one cheap authenticated call (the job list, one item) at
MISTRAL_SERVER_URL, and only then stored under service objlib-mistral, username api_key, where every
command looks when MISTRAL_API_KEY is not set. The key is never printed.
"""

from __future__ import annotations

import os
import sys

import click

from .. import client, config
from ..common import SECRETS, SERVICE_ENV, Failure, cli, log


def read_key() -> str:
    if sys.stdin.isatty():
        return click.prompt("Mistral API key (not shown)", hide_input=True, err=True, default="",
                            show_default=False)
    return sys.stdin.readline().rstrip("\n")


def store(key: str) -> str:
    """Put the key in the keyring; the backend's name, to say where it went."""
    import keyring
    from keyring.errors import KeyringError

    try:
        keyring.set_password(config.KEYRING_SERVICE, config.KEYRING_USERNAME, key)
    except (KeyringError, RuntimeError, OSError, NotImplementedError) as exc:
        raise Failure(f"the keyring refused the key ({type(exc).__name__}); set MISTRAL_API_KEY instead") from None
    backend = keyring.get_keyring()
    return getattr(backend, "name", type(backend).__name__)


@cli("make key    # prompts for the key, checks it, stores it", "pass show mistral | head -n 1 | set-key",
     env=SERVICE_ENV)
def main() -> None:
    """Check a Mistral API key with one cheap call and store it in the system keyring."""
    if not config.keyring_usable():
        raise Failure("this machine has no usable keyring (a headless server?); set MISTRAL_API_KEY in the "
                      "environment instead (cron: in the crontab line)")
    outer = os.environ.get("MISTRAL_API_KEY", "").strip()
    key = read_key()
    if not key.strip():
        raise Failure("no key given; nothing stored")
    SECRETS.update({key, key.strip()})
    os.environ["MISTRAL_API_KEY"] = key  # checked as every command checks it
    config.api_key()
    with client.Service(key=key, before_paying=True) as service:
        service.check_access()
    where = store(key)
    log(f"set-key: the key works at {config.server_url()}; stored in the keyring ({where}) as "
        f"{config.KEYRING_SERVICE}/{config.KEYRING_USERNAME}; every command reads it from there when "
        "MISTRAL_API_KEY is not set")
    if outer:
        log("set-key: note: MISTRAL_API_KEY is set in this shell, and commands use it before the keyring")


if __name__ == "__main__":
    main()
