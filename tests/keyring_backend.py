"""A keyring backend for tests (PYTHON_KEYRING_BACKEND=keyring_backend.EnvKeyring): it serves the password
from OBJBATCH_TEST_KEYRING, so the keyring path is exercised without touching a real keyring."""

import os

from keyring.backend import KeyringBackend


class EnvKeyring(KeyringBackend):
    priority = 1

    def get_password(self, service, username):
        if (service, username) == ("objlib-mistral", "api_key"):
            return os.environ.get("OBJBATCH_TEST_KEYRING")
        return None

    def set_password(self, service, username, password):
        raise NotImplementedError

    def delete_password(self, service, username):
        raise NotImplementedError
