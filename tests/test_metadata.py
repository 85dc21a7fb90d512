"""Answers as they really come: the corpus in tests/data/answers.jsonl, each with the decision and reason it
must get, plus the properties of the confidence score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from objbatch import metadata, prompt

CORPUS = [json.loads(line) for line in (Path(__file__).parent / "data" / "answers.jsonl").read_text().splitlines()]


def test_the_corpus_covers_every_outcome():
    assert len(CORPUS) >= 60
    assert {c["decision"] for c in CORPUS} == {"extracted", "needs_review", "failed_validation"}


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_corpus_answer_gets_its_decision_and_reason(case):
    verdict = metadata.judge(case["content"], case["finish_reason"], case["filename"])
    assert verdict.decision == case["decision"], verdict.reasons
    if case["reason"]:
        assert any(case["reason"] in reason for reason in verdict.reasons), verdict.reasons
    elif case["decision"] == "extracted":
        assert verdict.reasons == []
    for repair in case["repairs"]:
        assert any(repair in done for done in verdict.repairs), verdict.repairs
    if "confidence" in case:
        assert verdict.confidence == pytest.approx(case["confidence"], abs=0.001)
    if verdict.decision == "failed_validation":
        assert verdict.metadata is None and verdict.reasons
    else:
        assert not metadata.hard_errors(verdict.metadata)
        assert len(verdict.metadata["primary_topics"]) == len(set(verdict.metadata["primary_topics"]))


def test_confidence_is_monotone_and_reachable():
    penalties = list(metadata.soft_rules()["warnings"]) + list(metadata.soft_rules()["repairs"])
    for base in (0.0, 0.5, 0.85, 0.93, 1.0, None):
        previous = metadata.confidence(base, [])
        for i in range(1, len(penalties) + 1):
            current = metadata.confidence(base, penalties[:i])
            assert current <= previous
            previous = current
    assert metadata.confidence(0.95, []) >= metadata.soft_rules()["threshold"]


def test_threshold_is_configurable():
    answer = json.dumps({**json.loads(CORPUS[0]["content"]), "confidence_score": 0.8})
    assert metadata.judge(answer, "stop", CORPUS[0]["filename"]).decision == "needs_review"
    assert metadata.judge(answer, "stop", CORPUS[0]["filename"], threshold=0.75).decision == "extracted"


def test_prompt_and_schema_state_the_same_contract():
    text = prompt.system_prompt()
    schema = metadata.schema()
    for tag in metadata.VOCABULARY + metadata.CATEGORIES + metadata.DIFFICULTIES:
        assert tag in text
    topics = schema["properties"]["primary_topics"]
    assert f"{topics['minItems']}-{topics['maxItems']} distinct tags" in text
    wire = prompt.response_format()
    assert wire["type"] == "json_schema" and wire["json_schema"]["strict"] is True
    assert wire["json_schema"]["schema"]["properties"] == schema["properties"]
