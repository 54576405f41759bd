"""How good each volunteer is, from known-answer subjects, and a skill-weighted vote.

The model is SWAP's (the Space Warps Analysis Pipeline: Marshall et al. 2016,
MNRAS 455, 1171), for a question whose answers are "real" and anything else:

- Each volunteer ``k`` has a confusion matrix of two numbers,
  ``P_real = P(says real | real)`` and ``P_bogus = P(says not real | bogus)``,
  estimated from the known-answer subjects they classified (injected fakes
  are real, expert-labelled artefacts bogus) with one imaginary right and one
  imaginary wrong answer each (``(right + 1) / (seen + 2)``): a volunteer who
  has classified none starts at 0.5 and 0.5, and their votes change nothing.
- A subject's probability of being real starts at ``prior`` and is updated
  by Bayes' rule with each volunteer's vote: a "real" vote multiplies the odds
  by ``P_real / (1 - P_bogus)``, any other answer by ``(1 - P_real) / P_bogus``.
  The skill-weighted consensus is "real" when the probability is above 1/2.
- A volunteer's *skill* is ``P_real + P_bogus - 1`` (0 for guessing, 1 for
  always right: Youden's J, the sum of SWAP's two matrix elements less one).
  Without known-bogus subjects only ``P_real`` can be measured, and the
  skill is ranked by it.

On a known-answer subject the volunteers' matrices are estimated without that
subject (leave one out), so the weighted vote on fakes is not scored with the
answers it is scored against.

The confusion counts are those of aggregation-for-caesar's
``user_skill_reducer`` in its ``one-to-one`` mode with the classes real and
bogus (rows: the known answer; columns: the volunteer's), so a project can
run the same measure live in Caesar.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Skill", "Vote", "swap_probabilities", "volunteer_skills"]


@dataclass(frozen=True)
class Vote:
    """One volunteer's answer on one subject: whether they said real."""

    volunteer: str
    subject: int
    said_real: bool


@dataclass
class Skill:
    """A volunteer's confusion matrix on known-answer subjects.

    Attributes
    ----------
    volunteer : str
        Who (``user:<id>``, ``session:<hash>``, ``ip:<hash>``).
    real : int
        Known-real subjects classified.
    real_said_real : int
        Of those, called real.
    bogus : int
        Known-bogus subjects classified.
    bogus_said_bogus : int
        Of those, called not real.
    votes : int
        Every classification by the volunteer (known answer or not).
    """

    volunteer: str
    real: int = 0
    real_said_real: int = 0
    bogus: int = 0
    bogus_said_bogus: int = 0
    votes: int = 0

    @property
    def p_real(self) -> float:
        """``P(says real | real)``, with one imaginary right and one wrong answer."""
        return (self.real_said_real + 1) / (self.real + 2)

    @property
    def p_bogus(self) -> float:
        """``P(says not real | bogus)``, likewise."""
        return (self.bogus_said_bogus + 1) / (self.bogus + 2)

    @property
    def skill(self) -> float:
        """``P_real + P_bogus - 1`` (0 guessing, 1 perfect)."""
        return self.p_real + self.p_bogus - 1.0

    @property
    def known(self) -> int:
        """Known-answer subjects classified."""
        return self.real + self.bogus

    def confusion(self) -> list[list[int]]:
        """``[[real said real, real said not], [bogus said real, bogus said not]]``."""
        return [
            [self.real_said_real, self.real - self.real_said_real],
            [self.bogus - self.bogus_said_bogus, self.bogus_said_bogus],
        ]


def volunteer_skills(
    votes: Iterable[Vote], truth: Mapping[int, bool]
) -> dict[str, Skill]:
    """Every volunteer's confusion matrix on the known-answer subjects.

    Parameters
    ----------
    votes : iterable of Vote
        One per volunteer and subject (the first, as the results count them).
    truth : mapping of int to bool
        Known answers: subject (source id) to True (real) or False (bogus).

    Returns
    -------
    dict of str to Skill

    Examples
    --------
    >>> s = volunteer_skills([Vote("a", 1, True), Vote("a", 2, True)], {1: True, 2: False})
    >>> s["a"].confusion(), round(s["a"].skill, 3)
    ([[1, 0], [1, 0]], 0.0)
    """
    out: dict[str, Skill] = {}
    for vote in votes:
        skill = out.setdefault(vote.volunteer, Skill(vote.volunteer))
        skill.votes += 1
        known = truth.get(vote.subject)
        if known is None:
            continue
        if known:
            skill.real += 1
            skill.real_said_real += int(vote.said_real)
        else:
            skill.bogus += 1
            skill.bogus_said_bogus += int(not vote.said_real)
    return out


def _log_ratio(p_real: float, p_bogus: float, said_real: bool) -> float:
    """The log likelihood ratio (real : bogus) of one vote."""
    if said_real:
        return math.log(p_real) - math.log(1.0 - p_bogus)
    return math.log(1.0 - p_real) - math.log(p_bogus)


def swap_probabilities(
    votes: Iterable[Vote],
    truth: Mapping[int, bool],
    *,
    prior: float = 0.5,
) -> dict[int, float]:
    """Each subject's probability of being real under SWAP's model.

    Parameters
    ----------
    votes : iterable of Vote
        One per volunteer and subject.
    truth : mapping of int to bool
        The known answers the volunteers' matrices are estimated from; on
        these subjects a volunteer's own vote is left out of their matrix.
    prior : float
        Probability that a subject is real before any vote.

    Returns
    -------
    dict of int to float
        Subject to probability.
    """
    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior must be between 0 and 1, not {prior}")
    listed = list(votes)
    skills = volunteer_skills(listed, truth)
    odds: dict[int, float] = defaultdict(lambda: math.log(prior / (1.0 - prior)))
    for vote in listed:
        s = skills[vote.volunteer]
        right_real, real = s.real_said_real, s.real
        right_bogus, bogus = s.bogus_said_bogus, s.bogus
        known = truth.get(vote.subject)
        if known is True:  # leave this vote out of the volunteer's matrix
            real -= 1
            right_real -= int(vote.said_real)
        elif known is False:
            bogus -= 1
            right_bogus -= int(not vote.said_real)
        p_real = (right_real + 1) / (real + 2)
        p_bogus = (right_bogus + 1) / (bogus + 2)
        odds[vote.subject] += _log_ratio(p_real, p_bogus, vote.said_real)
    return {
        s: 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, o)))) for s, o in odds.items()
    }
