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
    else:  # what is stored: the whole contract, exactly 8 topics and a confidence_score
        assert not metadata.hard_errors(verdict.metadata)
        assert len(set(verdict.metadata["primary_topics"])) == 8
        assert 0 <= verdict.metadata["confidence_score"] <= 1
        if any("confidence_score was missing" in r for r in verdict.repairs):
            assert verdict.metadata["confidence_score"] == verdict.confidence


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
    assert topics["minItems"] == topics["maxItems"] == 8
    assert "primary_topics: exactly 8 distinct tags" in text
    wire = prompt.response_format()
    assert wire["type"] == "json_schema" and wire["json_schema"]["strict"] is True
    assert wire["json_schema"]["schema"]["properties"] == schema["properties"]


def test_topics_are_trimmed_and_padded_by_evidence_in_the_text():
    base = json.loads(CORPUS[0]["content"])
    text = ("Induction and logic. Induction again, and causality; " * 5) + "Free will, free-will and honesty."
    evidence = metadata.topic_evidence(text)
    assert evidence == {"induction": 10, "logic": 5, "causality": 5, "free_will": 2, "honesty": 1}
    many = {**base, "primary_topics": ["ethics", "values", "reason", "integrity", "justice", "independence",
                                       "identity", "honesty", "logic", "induction", "causality"]}
    trimmed = metadata.judge(json.dumps(many), "stop", CORPUS[0]["filename"], evidence=evidence)
    assert trimmed.metadata["primary_topics"] == ["ethics", "values", "reason", "integrity", "honesty", "logic",
                                                  "induction", "causality"]  # best supported, in the model's order
    assert trimmed.repairs == ["kept the 8 topics best supported by the text; dropped justice, independence, identity"]
    few = {**base, "primary_topics": ["ethics", "values", "honesty"]}
    padded = metadata.judge(json.dumps(few), "stop", CORPUS[0]["filename"], evidence=evidence)
    assert padded.metadata["primary_topics"] == ["ethics", "values", "honesty", "induction", "causality", "logic",
                                                 "free_will", "epistemology"]
    assert padded.repairs[0] == "added topic 'induction' (10 mentions in the text)"
    assert len(padded.repairs) == 5 and padded.confidence == pytest.approx(base["confidence_score"] - 0.05)
    assert metadata.judge(json.dumps({**base, "primary_topics": ["ethics", "values"]}), "stop").decision \
        == "failed_validation"


def test_a_missing_confidence_score_is_stored_as_computed():
    base = json.loads(CORPUS[0]["content"])
    del base["confidence_score"]
    verdict = metadata.judge(json.dumps(base), "stop", CORPUS[0]["filename"])
    assert verdict.metadata["confidence_score"] == verdict.confidence == 0.7
    assert "confidence_score was missing; stored the computed 0.70" in verdict.repairs
    assert verdict.decision == "needs_review" and "the model gave no confidence_score" in verdict.reasons


def test_the_quick_schema_check_agrees_with_jsonschema():
    """hard_errors decides the common case with a check compiled from the schema; jsonschema must agree with
    it on every answer of the corpus and on thousands of damaged copies of them."""
    import copy
    import random

    quick, full = metadata._quick(), metadata._validator()
    assert quick is not None
    rng = random.Random(7)
    values = [None, True, 0, 1.5, -1, 2, "", "x", "ethics", "qa_session", [], ["ethics"], {}, {"a": 1}]
    objects = []
    for case in CORPUS:
        try:
            obj, _ = metadata.parse_answer(case["content"], case["finish_reason"])
        except metadata.Unusable:
            continue
        objects.append(obj)
        for _ in range(60):
            damaged = copy.deepcopy(obj)
            target, key = damaged, None
            while isinstance(target, (dict, list)) and target and rng.random() < 0.7:
                key = rng.choice(list(target)) if isinstance(target, dict) else rng.randrange(len(target))
                if not isinstance(target[key], (dict, list)):
                    break
                target = target[key]
            if isinstance(target, dict) and target:
                key = key if key in target else rng.choice(list(target))
                (target.pop(key) if rng.random() < 0.3 else target.__setitem__(key, rng.choice(values)))
            elif isinstance(target, list):
                target.append(rng.choice(values + target)) if rng.random() < 0.5 or not target else target.pop()
            objects.append(damaged)
    assert len(objects) > 3000
    disagreements = [o for o in objects if quick(o) != full.is_valid(o)]
    assert disagreements == []
    assert sum(quick(o) for o in objects) > 50 and sum(not quick(o) for o in objects) > 1000


@pytest.mark.parametrize("usd, shown", [(0.16, "$0.1600"), (0.0081, "$0.0081"), (0.009967, "$0.0100"),
                                        (0.00001, "$0.00001"), (0.000012345, "$0.000012"), (0, "$0.0000")])
def test_money_keeps_four_decimals_from_a_cent_and_two_significant_digits_below(usd, shown):
    from objbatch.costs import money

    assert money(usd) == shown  # $0.009967 once printed as "$0.01" beside "$0.0081"
