"""What a run costs: prices (schemas/prices.json), token estimates for request lines before they are sent,
and the expected answer length from this database's past runs. Shared by estimate, batch-submit (the
budget), batch-run and stats."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from .common import Failure, load_schema

CHARS_PER_TOKEN = 3.85        # prose: 16-17K tokens for the library's 63.6 KB average transcript
JSON_CHARS_PER_TOKEN = 2.5    # the response_format schema: JSON is denser in tokens
TOKENS_PER_MESSAGE = 4        # role and separators
DEFAULT_ANSWER_TOKENS = 450   # an answer, until this database's own runs say otherwise


@lru_cache(maxsize=None)
def prices() -> dict:
    return load_schema("prices.json")


def known_models() -> list[str]:
    return sorted(prices()["models"])


def check_model(model: str, allow_unpriced: bool) -> None:
    """A model without a price is refused before paying: a typo would otherwise be paid for unpriced."""
    if model not in prices()["models"] and not allow_unpriced:
        raise Failure(f"model {model!r} has no price in schemas/prices.json (known: {', '.join(known_models())}); "
                      "fix the name, add its price there, or allow it explicitly (ALLOW_UNPRICED=1, "
                      "--allow-unpriced)")


def cost(model: str | None, input_tokens: float, output_tokens: float, synchronous: bool = False) -> float | None:
    """USD at the batch price (or the synchronous one); None for a model without a price."""
    price = prices()["models"].get(model or "")
    if price is None:
        return None
    factor = prices().get("synchronous_factor", 2.0) if synchronous else 1.0
    return (input_tokens * price["input"] + output_tokens * price["output"]) * factor / 1_000_000


def request_tokens(body: dict) -> int:
    """Input tokens of one request body as the service will count them: every message, and the schema."""
    text = sum(len(_text(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict))
    messages = len(body.get("messages") or [])
    return round(text / CHARS_PER_TOKEN + _schema_tokens(body.get("response_format")) + TOKENS_PER_MESSAGE * messages)


_last_schema: list = [None, 0.0]  # the previous request's response_format and its tokens: a run has one schema


def _schema_tokens(response_format: Any) -> float:
    if response_format != _last_schema[0]:
        _last_schema[:] = [response_format, len(json.dumps(response_format or "")) / JSON_CHARS_PER_TOKEN]
    return _last_schema[1]


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict) and isinstance(c.get("text"), str))
    return content if isinstance(content, str) else ""


def answer_tokens(conn: sqlite3.Connection | None) -> tuple[float, str]:
    """(expected completion tokens per request, where the figure comes from)."""
    if conn is not None:
        row = conn.execute("SELECT SUM(completion_tokens), SUM(succeeded_requests) FROM objbatch_jobs "
                           "WHERE completion_tokens > 0 AND succeeded_requests > 0").fetchone()
        if row and row[0] and row[1]:
            return row[0] / row[1], f"the average of this database's past runs: {row[1]:,} answers"
        return float(DEFAULT_ANSWER_TOKENS), "the default: no past runs in this database"
    return float(DEFAULT_ANSWER_TOKENS), "the default: no --db to learn from"


@dataclass
class Estimate:
    """What a run would cost, before it is paid."""

    model: str
    requests: int = 0
    input_tokens: int = 0
    answer_tokens: float = DEFAULT_ANSWER_TOKENS
    answer_basis: str = ""
    skipped: dict[str, int] = field(default_factory=dict)
    skips_known: bool = True  # False without build-jsonl's manifest: only the requests are known

    def add_request(self, body: dict) -> None:
        self.requests += 1
        self.input_tokens += request_tokens(body)

    def add_skip(self, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1

    @property
    def output_tokens(self) -> int:
        return round(self.requests * self.answer_tokens)

    @property
    def usd(self) -> float | None:
        return cost(self.model, self.input_tokens, self.output_tokens)

    @property
    def sync_usd(self) -> float | None:
        return cost(self.model, self.input_tokens, self.output_tokens, synchronous=True)

    def as_dict(self) -> dict:
        files = self.requests + sum(self.skipped.values()) if self.skips_known else None
        return {"model": self.model, "files": files, "requests": self.requests,
                "skipped": self.skipped, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "answer_tokens_per_request": round(self.answer_tokens, 1), "answer_tokens_basis": self.answer_basis,
                "batch_usd": _round(self.usd), "sync_usd": _round(self.sync_usd)}

    def render(self) -> str:
        selected = f"{self.requests + sum(self.skipped.values()):,}" if self.skips_known else \
            "unknown (give --manifest to count the files build-jsonl skipped)"
        lines = [f"Model:          {self.model}",
                 f"Files selected: {selected}",
                 f"Requests:       {self.requests:,}"]
        if self.skipped:
            lines.append(f"Skipped:        {sum(self.skipped.values()):,} (" + ", ".join(
                f"{n:,} {kind.replace('_', ' ')}" for kind, n in sorted(self.skipped.items())) + ")")
        lines += [f"Input tokens:   {self.input_tokens:,} (the request lines as they would be sent: prompt, "
                  "schema and text)",
                  f"Output tokens:  {self.output_tokens:,} ({self.answer_tokens:,.0f} a request, {self.answer_basis})",
                  f"Cost:           {money(self.usd)} at the batch price ({money(self.sync_usd)} synchronous)"
                  if self.usd is not None else
                  f"Cost:           unknown: {self.model} has no price in schemas/prices.json"]
        return "\n".join(lines)


def money(usd: float | None) -> str:
    """Dollars with four decimals, or two significant digits below a cent ($0.00001, not $0.0000)."""
    if usd is None:
        return "unknown"
    if usd == 0 or abs(usd) >= 0.01:
        return f"${usd:,.4f}"
    return "$" + _significant(usd, round)


def budget_above(usd: float | None) -> str:
    """The smallest round budget (two significant digits) that covers `usd`, as make's BUDGET takes it."""
    text = _significant(usd or 0.0, math.ceil)
    return text if float(text) >= (usd or 0.0) else _significant((usd or 0.0) * 1.01, math.ceil)


def _significant(usd: float, rounding: Callable[[float], int]) -> str:
    if usd <= 0:
        return "0"
    digits = max(2 - 1 - math.floor(math.log10(usd)), 0)
    text = f"{rounding(round(usd * 10 ** digits, 6)) / 10 ** digits:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _round(usd: float | None) -> float | None:
    return None if usd is None else round(usd, 6)
