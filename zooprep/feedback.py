"""Zooniverse feedback and training subjects: the metadata keys and the workflow's rules.

What the Zooniverse classifier does with them (front-end-monorepo,
``lib-classifier/src/store/feedback``):

- A subject's feedback is read from its metadata keys ``#feedback_N_<prop>``
  (``N`` an integer grouping one rule's keys): ``id`` (a rule id of the
  workflow task), ``answer`` and the optional ``successMessage`` and
  ``failureMessage``.  A key whose value is empty is ignored.
- The task's rules are ``task.feedback.rules`` when ``task.feedback.enabled``;
  a subject rule is used when its id, as a string, equals a workflow rule's.
- For a question task the strategy is ``singleAnswerQuestion``: the volunteer
  succeeded when ``rule.answer`` equals the chosen answer's zero-based index
  *as a string* (so the answer must be the text ``"0"``, not the number 0),
  and ``-1`` means no answer.  A rule whose enabled message is missing on both
  subject and workflow is dropped.
- The classification then records ``metadata.feedback``: per task, the rules
  with ``success`` true or false, and the export keeps it.

Caesar tells training subjects by the hidden key ``#training_subject``
(``true``); Designator serves the subject sets of the workflow configuration's
``training_set_ids`` to logged-in volunteers with the chances
``training_chances`` (by how many subjects each has seen) and
``training_default_chance``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zooprep.errors import InputError

__all__ = [
    "FEEDBACK_PREFIX",
    "STRATEGY",
    "TRAINING_KEY",
    "check_rule",
    "feedback_keys",
    "workflow_rules",
]

#: The keys of the one rule zooprep writes: ``#feedback_1_id``, ...
FEEDBACK_PREFIX = "#feedback_1_"
#: The strategy of a question task's rule.
STRATEGY = "singleAnswerQuestion"
#: Caesar's key for training subjects.
TRAINING_KEY = "#training_subject"


def feedback_keys(
    rule_id: str,
    answer: int,
    success: str | None = None,
    failure: str | None = None,
) -> dict[str, str]:
    """The metadata of one known-answer subject's feedback rule.

    Parameters
    ----------
    rule_id : str
        The rule's id in the workflow task.
    answer : int
        Zero-based index of the right answer (written as text).
    success, failure : str, optional
        This subject's messages (the workflow's defaults when not given).

    Examples
    --------
    >>> feedback_keys("fake-check", 0)
    {'#feedback_1_id': 'fake-check', '#feedback_1_answer': '0'}
    """
    if answer < -1:
        raise InputError(f"a feedback answer is an index from 0 (or -1), not {answer}")
    out = {
        f"{FEEDBACK_PREFIX}id": str(rule_id),
        f"{FEEDBACK_PREFIX}answer": str(answer),
    }
    if success:
        out[f"{FEEDBACK_PREFIX}successMessage"] = success
    if failure:
        out[f"{FEEDBACK_PREFIX}failureMessage"] = failure
    return out


def workflow_rules(workflow: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The feedback rules of each task of a workflow resource, as the classifier reads them."""
    out: dict[str, list[dict[str, Any]]] = {}
    tasks = workflow.get("tasks") or {}
    if not isinstance(tasks, Mapping):
        return out
    for key, task in tasks.items():
        feedback = (task or {}).get("feedback") or {}
        rules = feedback.get("rules") or []
        if feedback.get("enabled") and rules:
            out[str(key)] = [dict(r) for r in rules if isinstance(r, Mapping)]
    return out


def check_rule(
    workflow: Mapping[str, Any], rule_id: str, answers: set[str] | None = None
) -> str | None:
    """Why subjects with ``rule_id`` would get no feedback in this workflow (or None).

    Parameters
    ----------
    workflow : mapping
        The workflow resource (its ``id`` and ``tasks``).
    rule_id : str
        The ``#feedback_1_id`` of the subjects.
    answers : set of str, optional
        The ``#feedback_1_answer`` values the subjects carry, checked against
        the task's answers.

    Returns
    -------
    str or None
        One line naming what is wrong.
    """
    wid = workflow.get("id", "?")
    tasks = workflow.get("tasks") or {}
    found = workflow_rules(workflow)
    for task_key, rules in found.items():
        for rule in rules:
            if str(rule.get("id")) != str(rule_id):
                continue
            strategy = rule.get("strategy")
            if strategy != STRATEGY:
                return (
                    f"feedback rule {rule_id!r} of workflow {wid} task {task_key} "
                    f"has strategy {strategy!r}, not {STRATEGY!r} (the one for a "
                    "question task)"
                )
            for flag, message in (
                ("successEnabled", "defaultSuccessMessage"),
                ("failureEnabled", "defaultFailureMessage"),
            ):
                if rule.get(flag) and not rule.get(message):
                    return (
                        f"feedback rule {rule_id!r} of workflow {wid} enables "
                        f"{flag[:-7]} messages but has no {message}: the "
                        "classifier drops it"
                    )
            n = len((tasks.get(task_key) or {}).get("answers") or [])
            bad = sorted(
                a for a in answers or () if not a.lstrip("-").isdigit() or int(a) >= n
            )
            if n and bad:
                return (
                    f"feedback answer {bad[0]} is not an answer of workflow {wid} "
                    f"task {task_key}, which has {n} (0 to {n - 1})"
                )
            return None
    defined = [
        f"{t}: {', '.join(str(r.get('id')) for r in rs)}" for t, rs in found.items()
    ]
    off = [
        str(k)
        for k, t in tasks.items()
        if ((t or {}).get("feedback") or {}).get("rules")
        and not ((t or {}).get("feedback") or {}).get("enabled")
    ]
    what = (
        f"rules defined: {'; '.join(defined)}"
        if defined
        else "no task has feedback enabled"
        + (
            f" (task {', '.join(off)} has rules but feedback switched off)"
            if off
            else ""
        )
    )
    return (
        f"feedback rule {rule_id!r} is not defined in workflow {wid} ({what}); "
        "add it in the project builder (the task's feedback section) before "
        "uploading, or write the manifest with --feedback naming one of them"
    )
