"""What a run costs: prices (schemas/prices.json), token estimates for request lines before they are sent,
and the expected answer length from this database's past runs. Shared by estimate, batch-submit (the
budget), batch-run and stats."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, Callable, Iterable

from .common import EXIT_USAGE, Failure, load_schema, log

CHARS_PER_TOKEN = 3.85        # prose: 16-17K tokens for the library's 63.6 KB average transcript (the one
                              # ratio: the estimate counts with it and prompt.py cuts a text's budget with it)
JSON_CHARS_PER_TOKEN = 2.5    # the response_format schema: JSON is denser in tokens
TOKENS_PER_MESSAGE = 4        # role and separators
DEFAULT_ANSWER_TOKENS = 450   # an answer, until this database's own runs say otherwise
DEFAULT_REASONING_TOKENS = 2_000  # a reasoning model's thinking before that answer, until its own runs say
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")  # the service's enum (OpenAPI)


@lru_cache(maxsize=None)
def prices() -> dict[str, Any]:
    return load_schema("prices.json")


def entry(model: str | None) -> dict[str, Any] | None:
    """The price entry of a model name: an alias (a -latest name) gives its dated model's entry, with
    `resolves_to`; None for a model without a price."""
    models = prices()["models"]
    found = models.get(model or "")
    if found is not None and "resolves_to" in found:
        return {**models.get(found["resolves_to"], {}), "resolves_to": found["resolves_to"]}
    return found


def resolved(model: str) -> str | None:
    """The dated model an alias pointed to when the prices were read (None when unknown)."""
    found = entry(model)
    return found.get("resolves_to") if found else None


def known_models() -> list[str]:
    """The names a run would usually use: the aliases of models that are not retired (their dated names work
    too)."""
    return sorted(name for name, found in prices()["models"].items()
                  if "resolves_to" in found and not (entry(name) or {}).get("retired"))


def check_model(model: str, allow_unpriced: bool) -> None:
    """Refused before paying: a retired model (naming its replacement), and a model without a price (a typo
    would otherwise be paid for unpriced) unless allowed."""
    found = entry(model)
    retired = (found or {}).get("retired")
    if retired and date.today().isoformat() >= retired["date"]:
        raise Failure(f"model {model} was retired on {retired['date']}; use its replacement "
                      f"{retired['replacement']} (MODEL={retired['replacement']}, --model {retired['replacement']})")
    if retired:
        log(f"objbatch: model {model} retires on {retired['date']}; its replacement is {retired['replacement']}")
    if found is None and not allow_unpriced:
        raise Failure(f"model {model!r} has no price in schemas/prices.json (known: {', '.join(known_models())}); "
                      "fix the name, add its price there, or allow it explicitly (ALLOW_UNPRICED=1, "
                      "--allow-unpriced)")


def price_note(model: str | None = None) -> str:
    """Where the figures come from: 'prices as of DATE (source)'."""
    found = entry(model) or prices()
    return f"prices as of {found.get('as_of', prices()['as_of'])} ({found.get('source', prices()['source'])})"


def stale_note(today: date | None = None) -> str | None:
    """One line when schemas/prices.json is older than its stale_after_days (prices change)."""
    as_of = date.fromisoformat(prices()["as_of"])
    age = ((today or date.today()) - as_of).days
    if age <= prices().get("stale_after_days", 90):
        return None
    return (f"the prices in schemas/prices.json are {age} days old (as of {as_of}); check Mistral's current "
            "prices and update the file (the figures here may be off)")


def cost(model: str | None, input_tokens: float, output_tokens: float, synchronous: bool = False,
         cached_tokens: float = 0) -> float | None:
    """USD at the batch price (or the synchronous one); None for a model without a price. Cached prompt
    tokens (part of input_tokens) cost their own fraction of the input price; reasoning tokens are output."""
    price = entry(model)
    if price is None or "input" not in price:
        return None
    factor = 1.0 if synchronous else price.get("batch_factor", 0.5)
    cached = min(max(cached_tokens, 0), input_tokens)
    paid_input = (input_tokens - cached) * price["input"] + cached * price["input"] * price.get("cached_input_factor", 1.0)
    usd: float = (paid_input + output_tokens * price["output"]) * factor / 1_000_000
    return usd


def usage_tokens(usage: Any) -> tuple[int, int, int, int]:
    """(prompt, cached prompt, output, reasoning) tokens from a result's usage, as the service reports them.
    Output includes reasoning: the service counts thinking in completion_tokens (its docs' example); should
    it ever report more reasoning than completion tokens, they are added."""
    if not isinstance(usage, dict):
        return 0, 0, 0, 0
    details = [usage.get(k) for k in ("prompt_tokens_details", "prompt_token_details")]
    cached = max([_int(d.get("cached_tokens")) for d in details if isinstance(d, dict)] +
                 [_int(usage.get("num_cached_tokens")), _int(usage.get("cached_tokens"))])
    out_details = usage.get("completion_tokens_details")
    reasoning = max(_int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0,
                    _int(usage.get("reasoning_tokens")))
    completion = _int(usage.get("completion_tokens"))
    output = completion if reasoning <= completion else completion + reasoning
    return _int(usage.get("prompt_tokens")), cached, output, reasoning


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def reasons(model: str, effort: str | None = None) -> bool:
    """Whether the model's answers carry reasoning (billed as output): a reasoning model, unless told not
    to, or a model that takes reasoning_effort when given an effort other than none."""
    found = entry(model) or {}
    if effort:
        return effort != "none" and bool(found.get("reasoning_effort") or found.get("reasoning"))
    return bool(found.get("reasoning"))


def check_effort(model: str, effort: str | None) -> None:
    """REASONING_EFFORT is sent only to a model that accepts it, with a value the service knows."""
    if not effort:
        return
    if effort not in REASONING_EFFORTS:
        raise Failure(f"reasoning effort {effort!r} is not one of {', '.join(REASONING_EFFORTS)}; leave it unset "
                      "for the model's default", EXIT_USAGE)
    found = entry(model)
    if found is not None and not found.get("reasoning_effort"):
        raise Failure(f"model {model} does not take a reasoning effort (schemas/prices.json); leave "
                      "REASONING_EFFORT unset, or use a model that does (e.g. mistral-medium-latest)", EXIT_USAGE)


def request_tokens(body: dict[str, Any], schema_tokens: float | None = None) -> int:
    """Input tokens of one request body as the service will count them: every message, and the schema
    (`schema_tokens`, when the caller knows them already: a run sends one schema)."""
    text = sum(len(_text(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict))
    messages = len(body.get("messages") or [])
    if schema_tokens is None:
        schema_tokens = response_format_tokens(body.get("response_format"))
    return round(text / CHARS_PER_TOKEN + schema_tokens + TOKENS_PER_MESSAGE * messages)


def response_format_tokens(response_format: Any) -> float:
    return len(json.dumps(response_format or "")) / JSON_CHARS_PER_TOKEN


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict) and isinstance(c.get("text"), str))
    return content if isinstance(content, str) else ""


def answer_tokens(conn: sqlite3.Connection | None, model: str | None = None,
                  effort: str | None = None) -> tuple[float, str]:
    """(expected output tokens per request, reasoning included, and where the figure comes from): the
    average of this database's past runs of the model (of any model, for one that does not reason), else
    the default, plus the default reasoning for a model that reasons."""
    thinking = reasons(model, effort) if model else False
    if conn is not None:
        same = " AND model = ?" if thinking else ""
        row = conn.execute("SELECT SUM(completion_tokens), SUM(succeeded_requests) FROM objbatch_jobs WHERE "
                           "completion_tokens > 0 AND succeeded_requests > 0" + same,
                           (model,) if thinking else ()).fetchone()
        if row and row[0] and row[1]:
            whose = f"this database's past runs of {model}" if thinking else "this database's past runs"
            return row[0] / row[1], f"the average of {whose}: {row[1]:,} answers"
    if thinking:
        return float(DEFAULT_ANSWER_TOKENS + DEFAULT_REASONING_TOKENS), \
            f"the default for a reasoning model: {DEFAULT_ANSWER_TOKENS} + {DEFAULT_REASONING_TOKENS:,} reasoning"
    if conn is not None:
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
    effort: str | None = None  # the reasoning_effort the requests carry
    # The last request's response_format and its tokens: a run sends one schema, counted once (JSON-encoding
    # it for every request cost 1 s per 10,000; measured for issue 19).
    _schema: tuple[Any, float] = field(default=(None, 0.0), repr=False)

    def add_request(self, body: dict[str, Any]) -> None:
        self.requests += 1
        if body.get("response_format") != self._schema[0]:
            self._schema = (body.get("response_format"), response_format_tokens(body.get("response_format")))
        self.input_tokens += request_tokens(body, self._schema[1])
        if isinstance(body.get("reasoning_effort"), str):
            self.effort = body["reasoning_effort"]

    def learn_answers(self, conn: sqlite3.Connection | None) -> None:
        """The expected output per request (reasoning included), once the requests are counted."""
        self.answer_tokens, self.answer_basis = answer_tokens(conn, self.model, self.effort)

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

    def as_dict(self) -> dict[str, Any]:
        files = self.requests + sum(self.skipped.values()) if self.skips_known else None
        return {"model": self.model, "files": files, "requests": self.requests,
                "skipped": self.skipped, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "answer_tokens_per_request": round(self.answer_tokens, 1), "answer_tokens_basis": self.answer_basis,
                "batch_usd": _round(self.usd), "sync_usd": _round(self.sync_usd),
                "resolves_to": resolved(self.model), "prices": price_note(self.model)}

    def render(self) -> str:
        selected = f"{self.requests + sum(self.skipped.values()):,}" if self.skips_known else \
            "unknown (give --manifest to count the files build-jsonl skipped)"
        dated = resolved(self.model)
        lines = [f"Model:          {self.model}" + (f" ({dated} when the prices were read)" if dated else ""),
                 f"Files selected: {selected}",
                 f"Requests:       {self.requests:,}"]
        if self.skipped:
            lines.append(f"Skipped:        {sum(self.skipped.values()):,} (" + ", ".join(
                f"{n:,} {kind.replace('_', ' ')}" for kind, n in sorted(self.skipped.items())) + ")")
        lines += [f"Input tokens:   {self.input_tokens:,} (the request lines as they would be sent: prompt, "
                  "schema and text)",
                  f"Output tokens:  {self.output_tokens:,} ({self.answer_tokens:,.0f} a request, {self.answer_basis})",
                  f"Cost:           {money(self.usd)} at the batch price ({money(self.sync_usd)} synchronous); "
                  f"{price_note(self.model)}"
                  if self.usd is not None else
                  f"Cost:           unknown: {self.model} has no price in schemas/prices.json"]
        return "\n".join(lines)


def estimate(model: str, sent: Iterable[tuple[dict[str, Any] | None, dict[str, Any] | None]], conn: sqlite3.Connection | None) -> Estimate:
    """The estimate of (request line, manifest line) pairs, either may be None: each request as it would be
    sent, each file the manifest skipped by its kind; the answer length from this database's past runs."""
    figures = Estimate(model=model)
    for request, entry in sent:
        if request is not None:
            figures.add_request(request["body"])
        if entry is not None and entry.get("skip"):
            figures.add_skip(entry.get("skip_kind") or "other")
    figures.learn_answers(conn)
    return figures


def over_budget(figures: Estimate, budget: float | None) -> str | None:
    """Why the run must not be paid for, or None."""
    if budget is None:
        return None
    if figures.usd is None:
        return f"the budget {money(budget)} cannot be checked: model {figures.model} has no price"
    if figures.usd > budget:
        return f"the estimate {money(figures.usd)} is over the budget {money(budget)}"
    return None

def money(usd: float | None) -> str:
    """Dollars with four decimals, or two significant digits below a cent ($0.00001, not $0.0000)."""
    if usd is None:
        return "unknown"
    small = _significant(usd, round) if 0 < abs(usd) < 0.01 else ""
    if not small or float(small) >= 0.01:  # $0.009967 rounds to a cent: shown as $0.0100, like other cents
        return f"${usd:,.4f}"
    return "$" + small


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
