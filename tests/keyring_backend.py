"""A keyring backend for tests (PYTHON_KEYRING_BACKEND=keyring_backend.EnvKeyring): it serves the password
from OBJBATCH_TEST_KEYRING, or stores it in and serves it from the file OBJBATCH_TEST_KEYRING_FILE names, so
the keyring path is exercised without touching a real keyring."""

import os

from keyring.backend import KeyringBackend


class EnvKeyring(KeyringBackend):
    priority = 1

    def get_password(self, service, username):
        if (service, username) == ("objlib-mistral", "api_key"):
            stored = os.environ.get("OBJBATCH_TEST_KEYRING_FILE")
            if stored and os.path.exists(stored):
                with open(stored, encoding="utf-8") as handle:
                    return handle.read()
            return os.environ.get("OBJBATCH_TEST_KEYRING")
        return None

    def set_password(self, service, username, password):
        stored = os.environ.get("OBJBATCH_TEST_KEYRING_FILE")
        if not stored or (service, username) != ("objlib-mistral", "api_key"):
            raise NotImplementedError
        with open(stored, "w", encoding="utf-8") as handle:
            handle.write(password)

    def delete_password(self, service, username):
        raise NotImplementedError
