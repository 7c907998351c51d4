"""The experiment document, sticky salted assignment and team-draft interleaving (pure functions)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from core.experiments import (
    CONCLUDED,
    INTERLEAVING,
    ExperimentError,
    assign,
    document_checksum,
    new_document,
    parse_model_ref,
    team_draft,
    unit_point,
    validate_document,
)


def doc(**changes: object) -> dict:
    base = new_document("exp-1", ("bpr", "1"), [("sasrec", "2")], salt="s1")
    base.update(changes)
    return base


def test_new_document_names_arms_and_defaults_to_equal_shares() -> None:
    one = new_document("exp-1", ("bpr", "1"), [("sasrec", "2")])
    assert [a["variant"] for a in one["arms"]] == ["control", "treatment"]
    assert [a["share"] for a in one["arms"]] == [0.5, 0.5]
    assert one["type"] == "ab" and one["status"] == "running" and one["winner"] is None
    assert one["salt"] != new_document("exp-1", ("bpr", "1"), [("sasrec", "2")])["salt"], "random salt"
    three = new_document("exp-2", ("bpr", "1"), [("sasrec", "2"), ("knn", "3")], shares=[0.6, 0.2, 0.2])
    assert [a["variant"] for a in three["arms"]] == ["control", "treatment-1", "treatment-2"]
    assert [(a["model_name"], a["version"]) for a in three["arms"]] == [("bpr", "1"), ("sasrec", "2"), ("knn", "3")]
    assert parse_model_ref("sasrec:12") == ("sasrec", "12")
    with pytest.raises(ExperimentError, match="MODEL:VERSION"):
        parse_model_ref("sasrec")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "bad name"}, "name='bad name' is not a valid name"),
        ({"type": "bandit"}, r"type='bandit' must be one of \['ab', 'interleaving'\]"),
        ({"salt": "has space"}, "salt must be"),
        ({"status": "paused"}, "status='paused'"),
        ({"status": CONCLUDED}, "names its winner"),
        ({"winner": "nobody"}, "winner='nobody' is not one of the arms"),
        ({"extra": 1}, r"unknown key\(s\) \['extra'\]"),
    ],
)
def test_invalid_documents_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        validate_document(doc(**change), require_checksums=False)


def test_invalid_arms_are_refused() -> None:
    with pytest.raises(ExperimentError, match=r"sum to 1\.1; they must sum to 1"):
        new_document("e", ("bpr", "1"), [("sasrec", "2")], shares=[0.6, 0.5])
    with pytest.raises(ExperimentError, match=r"within \(0, 1\]"):
        new_document("e", ("bpr", "1"), [("sasrec", "2")], shares=[1.0, 0.0])
    with pytest.raises(ExperimentError, match="2 given for 3 arms"):
        new_document("e", ("bpr", "1"), [("sasrec", "2"), ("knn", "1")], shares=[0.5, 0.5])
    with pytest.raises(ExperimentError, match="exactly two arms"):
        new_document("e", ("bpr", "1"), [("sasrec", "2"), ("knn", "1")], kind=INTERLEAVING)
    with pytest.raises(ExperimentError, match=r"shares are 0\.5,0\.5"):
        new_document("e", ("bpr", "1"), [("sasrec", "2")], shares=[0.9, 0.1], kind=INTERLEAVING)
    swapped = doc()
    swapped["arms"] = list(reversed(swapped["arms"]))
    with pytest.raises(ExperimentError, match="arms\\[0\\] is the control"):
        validate_document(swapped, require_checksums=False)
    with pytest.raises(ExperimentError, match="lacks the checksum"):
        validate_document(doc())


def test_checksum_covers_everything_but_itself() -> None:
    one = doc()
    signed = {**one, "checksum": document_checksum(one)}
    assert document_checksum(signed) == signed["checksum"]
    moved = {**signed, "arms": [dict(a) for a in signed["arms"]]}
    moved["arms"][1]["share"] = 0.51
    assert document_checksum(moved) != signed["checksum"]


def test_assignment_is_sticky_and_follows_the_shares_within_2_percent() -> None:
    users = [f"user-{n}" for n in range(20_000)]
    for shares in ([0.5, 0.5], [0.8, 0.1, 0.1], [0.9, 0.1]):
        arms = [assign("salt-a", u, shares) for u in users]
        assert arms == [assign("salt-a", u, shares) for u in users], "a pure function of salt and unit"
        counts = Counter(arms)
        for index, share in enumerate(shares):
            assert abs(counts[index] / len(users) - share) <= 0.02, (shares, counts)
    again = [assign("salt-b", u, [0.5, 0.5]) for u in users]
    moved = sum(a != b for a, b in zip([assign("salt-a", u, [0.5, 0.5]) for u in users], again, strict=True))
    assert 0.45 < moved / len(users) < 0.55, "a new salt reshuffles about half the users between two arms"
    assert all(0.0 <= unit_point("s", u) < 1.0 for u in users[:100])


def _check_team_draft(first: list[str], second: list[str], k: int, seed: int) -> list[tuple[str, int]]:
    merged = team_draft(first, second, k, random.Random(seed))
    items = [item for item, _ in merged]
    assert len(items) == len(set(items)), "no item twice"
    assert len(items) == min(k, len(set(first) | set(second)))
    for team, ranking in ((0, first), (1, second)):
        picked = [item for item, t in merged if t == team]
        assert all(item in ranking for item in picked), "a team only places its own items"
        assert picked == sorted(picked, key=ranking.index), "each team's picks keep its own order"
    if len(first) >= k and len(second) >= k:
        for n in range(1, len(merged) + 1):
            teams = [t for _, t in merged[:n]]
            assert abs(teams.count(0) - teams.count(1)) <= 1, "teams take turns"
            for ranking in (first, second):
                assert set(ranking[: n // 2]) <= set(items[:n]), "each ranking's top n/2 is in the top n"
    return merged


def test_team_draft_properties_on_random_rankings() -> None:
    rng = random.Random(7)
    catalogue = [f"i{n}" for n in range(40)]
    for trial in range(300):
        k = rng.randint(1, 15)
        first = rng.sample(catalogue, rng.randint(k, 25) if trial % 3 else rng.randint(0, 25))
        second = rng.sample(catalogue, rng.randint(k, 25) if trial % 3 else rng.randint(0, 25))
        _check_team_draft(first, second, k, seed=trial)


def test_team_draft_is_reproducible_and_fair_on_identical_rankings() -> None:
    ranking = [f"i{n}" for n in range(10)]
    assert team_draft(ranking, ranking, 10, random.Random(3)) == team_draft(ranking, ranking, 10, random.Random(3))
    merged = team_draft(ranking, ranking, 10, random.Random(3))
    assert [item for item, _ in merged] == ranking, "identical rankings interleave to themselves"
    firsts = Counter(team_draft(ranking, ranking, 10, random.Random(seed))[0][1] for seed in range(2000))
    assert 0.45 < firsts[0] / 2000 < 0.55, "the coin decides who picks first"


def test_team_draft_fills_from_the_longer_list_when_one_runs_out() -> None:
    merged = team_draft(["a"], ["b", "c", "d"], 4, lambda: True)
    assert merged == [("a", 0), ("b", 1), ("c", 1), ("d", 1)]
    assert team_draft([], [], 3, lambda: True) == []
