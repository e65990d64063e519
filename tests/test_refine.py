"""Refine triggers, attempt selection and refinement choice with fallback."""

import random

import pytest

from critique_rl.refine import (
    attempts_to_critique,
    choose_refinements,
    groups_to_refine,
)

GROUPS = [[0, 0, 0], [1, 0, 0], [1, 1, 1]]


@pytest.mark.parametrize("trigger, expected", [("all_fail", [0]), ("any_fail", [0, 1]), ("always", [0, 1, 2])])
def test_each_trigger_selects_its_groups(trigger, expected):
    assert groups_to_refine(GROUPS, trigger) == expected


def test_failed_attempts_are_critiqued_and_always_critiques_all():
    assert attempts_to_critique([1, 0, 0], "any_fail") == [1, 2]
    assert attempts_to_critique([1, 0, 0], "always") == [0, 1, 2]


def test_correct_refinements_are_preferred_up_to_k():
    assert choose_refinements([0, 1, 0, 1, 1], k=2, fallback="random", rng=random.Random(0)) == [1, 3]


def test_fallbacks_when_no_refinement_is_correct():
    assert choose_refinements([0, 0, 0], 1, "first", random.Random(0)) == [0]
    assert choose_refinements([0, 0, 0], 1, "none", random.Random(0)) == []
    picks = {tuple(choose_refinements([0, 0, 0], 1, "random", random.Random(seed))) for seed in range(30)}
    assert picks == {(0,), (1,), (2,)}


def test_unknown_names_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match="all_fail, any_fail, always"):
        groups_to_refine(GROUPS, "sometimes")
    with pytest.raises(ValueError, match="random, first, none"):
        choose_refinements([0], 1, "best", random.Random(0))
