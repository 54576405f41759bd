"""How the Zooniverse classifier turns subject metadata into feedback, in Python.

A stand-in for zooniverse/front-end-monorepo ``packages/lib-classifier/src/
store/feedback`` (``helpers/metadata-to-rules.js``, ``get-feedback-from-tasks.js``,
``generate-rules.js``, ``rule-checker.js`` and the ``single-answer-question``
strategy), written from what that code does so that tests can check the
metadata zooprep writes is what the classifier accepts:

- ``metadata_to_rules``: every key ``#feedback_N_prop`` whose value, as a
  string, is not empty, gives ``rules[N][prop] = value`` (the value itself,
  not its string);
- ``feedback_from_tasks``: the rules of each task with ``feedback.enabled``
  and at least one rule;
- ``generate_rules``: a workflow rule is used when a subject rule has the
  same id, both as strings; its strategy's ``create_rule`` builds it;
- single answer question ``create_rule``: ``answer`` and ``id`` from the
  subject, ``strategy``, ``successEnabled``/``failureEnabled`` (false when
  absent) from the workflow, each enabled message from the subject or the
  workflow's default; then the rule checker drops (returns ``{}``) a rule with
  an undefined or empty property that is not a finite number or a boolean;
- single answer question ``reduce``: success when ``rule["answer"]`` equals
  the chosen answer's index as a string (-1 when no answer) -- a number in
  the metadata never equals a string, so the answer must be text.
"""

from __future__ import annotations

import math
from typing import Any


def _js_string(value: Any) -> str:
    """JavaScript's ``String(value)`` for the JSON values metadata holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def metadata_to_rules(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The subject's rules, in index order."""
    rules: dict[int | str, dict[str, Any]] = {}
    for key, value in metadata.items():
        parts = key.split("_")
        prefix = parts[0]
        index = parts[1] if len(parts) > 1 else ""
        prop = parts[2] if len(parts) > 2 else ""
        text = "" if value is None else _js_string(value)
        if prefix == "#feedback" and text:
            rules.setdefault(index, {})[prop] = value
    return [
        rules[k] for k in sorted(rules, key=lambda k: (not str(k).isdigit(), str(k)))
    ]


def feedback_from_tasks(tasks: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Task id to its rules, for tasks with feedback enabled."""
    out = {}
    for key, task in (tasks or {}).items():
        feedback = (task or {}).get("feedback") or {"enabled": False, "rules": []}
        if feedback.get("enabled") and feedback.get("rules"):
            out[key] = feedback["rules"]
    return out


def _valid(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule checker: ``{}`` when a property is undefined or empty."""
    for value in rule.values():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            continue
        if value is None or (hasattr(value, "__len__") and len(value) == 0):
            return {}
    return rule


def single_answer_create_rule(subject_rule: dict, workflow_rule: dict) -> dict:
    """The single-answer-question strategy's ``createRule``."""
    rule: dict[str, Any] = {
        "answer": subject_rule.get("answer"),
        "failureEnabled": workflow_rule.get("failureEnabled") or False,
        "id": subject_rule.get("id"),
        "strategy": workflow_rule.get("strategy"),
        "successEnabled": workflow_rule.get("successEnabled") or False,
    }
    if rule["failureEnabled"]:
        rule["failureMessage"] = subject_rule.get(
            "failureMessage"
        ) or workflow_rule.get("defaultFailureMessage")
    if rule["successEnabled"]:
        rule["successMessage"] = subject_rule.get(
            "successMessage"
        ) or workflow_rule.get("defaultSuccessMessage")
    return _valid(rule)


def single_answer_reduce(rule: dict[str, Any], answer: int | None) -> dict[str, Any]:
    """The single-answer-question strategy's reducer: is the answer right?"""
    chosen = answer if answer is not None and answer > -1 else -1
    return {**rule, "success": rule.get("answer") == str(chosen)}


STRATEGIES = {"singleAnswerQuestion": single_answer_create_rule}


def generate_rules(
    metadata: dict[str, Any], tasks: dict[str, Any]
) -> dict[str, list[dict]]:
    """The canonical rules of a subject in a workflow, per task."""
    subject_rules = metadata_to_rules(metadata)
    canonical = {}
    for task, rules in feedback_from_tasks(tasks).items():
        made = []
        for workflow_rule in rules:
            match = next(
                (
                    r
                    for r in subject_rules
                    if r.get("id") is not None
                    and workflow_rule.get("id") is not None
                    and _js_string(r["id"]) == _js_string(workflow_rule["id"])
                ),
                None,
            )
            if match is not None:
                made.append(STRATEGIES[workflow_rule["strategy"]](match, workflow_rule))
        if made:
            canonical[task] = made
    return canonical


def message_after(
    metadata: dict, tasks: dict, task: str, answer: int | None
) -> str | None:
    """The message a volunteer sees after answering ``task`` (None: no feedback)."""
    rules = generate_rules(metadata, tasks).get(task, [])
    shown = []
    for rule in rules:
        if not rule:
            continue
        done = single_answer_reduce(rule, answer)
        if done["success"] and done.get("successEnabled"):
            shown.append(done["successMessage"])
        elif not done["success"] and done.get("failureEnabled"):
            shown.append(done["failureMessage"])
    return " ".join(shown) if shown else None
