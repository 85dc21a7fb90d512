"""Answers that are not 200, shaped as the service shapes them, and the checks on a request that raise them."""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    """An HTTP answer other than 200: its status, JSON body and extra headers."""

    def __init__(self, status: int, body: dict, headers: dict | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def error(status: int, message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(status, {"object": "error", "message": message, "type": "invalid_request_error",
                             "param": None, "code": code})


def not_found(what: str) -> ApiError:
    return ApiError(404, {"detail": f"{what} not found"})


def gone(file_id: str) -> ApiError:
    """A result file past its retention (24 hours after its job finished). The service's exact answer is
    not documented: 404, as for a file it does not have (objbatch treats 404 and 410 alike)."""
    return ApiError(404, {"object": "error", "message": f"File {file_id} has expired: batch results can be "
                          "downloaded for 24 hours after the job completed", "type": "invalid_request_error",
                          "param": None, "code": "file_expired"})


def unprocessable(message: str, loc: list) -> ApiError:
    """A 422 in the shape the SDK parses for chat endpoints ({"detail": [{loc, msg, type}]})."""
    return ApiError(422, {"detail": [{"loc": loc, "msg": message, "type": "value_error"}]})


def query_int(query: dict, key: str, default: int) -> int:
    try:
        return int((query.get(key) or [default])[0])
    except ValueError:
        raise unprocessable(f"{key} must be an integer", ["query", key]) from None


def json_body(body: bytes) -> dict:
    try:
        value: Any = json.loads(body or b"null")
    except json.JSONDecodeError:
        raise unprocessable("body is not valid JSON", ["body"]) from None
    if not isinstance(value, dict):
        raise unprocessable("body must be a JSON object", ["body"])
    return value
