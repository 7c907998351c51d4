"""Online experiments, the pure parts: the ``experiment.json`` document, assignment, team-draft interleaving.

Serving (which assigns and merges), the registry (which stores the document) and training (whose CLI
writes it) all import this module; it depends on nothing but the standard library.

The document (``<registry>/experiment.json``, beside ``champion.json``)::

    {"name": "sasrec-vs-bpr", "type": "ab" | "interleaving", "salt": "...", "status": "running",
     "arms": [{"variant": "control", "model_name": "bpr", "version": "3", "checksum": "<manifest checksum>",
               "share": 0.5},
              {"variant": "treatment", "model_name": "sasrec", "version": "4", "checksum": "...", "share": 0.5}],
     "started_at": "...Z", "ended_at": null, "winner": null, "reason": null, "checksum": "<sha256>"}

The first arm is the control; treatments are ``treatment`` (one) or ``treatment-1``, ``treatment-2``,
... (several). ``checksum`` is the sha256 of the document's canonical JSON without its own
``checksum`` key (:func:`document_checksum`): a document edited by hand is refused.

Assignment (:func:`assign`) is a pure function of the salt and the unit (user id, else session id,
else the request id): the same unit lands in the same arm on every request, worker and replica, with
no state, and a new salt reshuffles everyone. Interleaving (:func:`team_draft`) merges the control's
and the treatment's ranked lists per request, each item tagged with the arm ("team") that placed it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

EXPERIMENT_FILE = "experiment.json"
AB = "ab"
INTERLEAVING = "interleaving"
EXPERIMENT_TYPES: tuple[str, ...] = (AB, INTERLEAVING)
RUNNING, STOPPED, CONCLUDED = "running", "stopped", "concluded"
STATUSES: tuple[str, ...] = (RUNNING, STOPPED, CONCLUDED)
CONTROL = "control"
#: The variant of an interleaved exposure (both arms contribute; each item names its team).
INTERLEAVED = "interleaved"
#: How far from 1 the shares may sum (they are typed as decimals).
SHARE_TOLERANCE = 1e-6

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SALT_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
_REQUIRED = ("name", "type", "salt", "status", "arms")
_OPTIONAL = ("started_at", "ended_at", "winner", "reason", "checksum", "origin")

T = TypeVar("T", bound=Hashable)


class ExperimentError(ValueError):
    """An experiment document or request that cannot be used; the message names the field and the fix."""


@dataclass(frozen=True)
class ArmRef:
    """One arm as the document holds it."""

    variant: str
    model_name: str
    version: str
    share: float
    checksum: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "model_name": self.model_name,
            "version": self.version,
            "checksum": self.checksum,
            "share": self.share,
        }


def check_name(field: str, value: Any) -> str:
    """A registry-style name (letters, digits, ``.``, ``_``, ``-``; at most 128 characters)."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ExperimentError(f"{field}={value!r} is not a valid name: use letters, digits, '.', '_' or '-'")
    return value


def parse_model_ref(text: str) -> tuple[str, str]:
    """``"MODEL:VERSION"`` → ``(model, version)``, both checked names."""
    model, sep, version = str(text).partition(":")
    if not sep:
        raise ExperimentError(f"{text!r}: expected MODEL:VERSION, e.g. sasrec:4")
    return check_name("model", model), check_name("version", version)


def treatment_variants(n: int) -> list[str]:
    """``["treatment"]`` for one treatment, ``["treatment-1", ..., "treatment-n"]`` for several."""
    return ["treatment"] if n == 1 else [f"treatment-{i}" for i in range(1, n + 1)]


def new_document(
    name: str,
    control: tuple[str, str],
    treatments: Sequence[tuple[str, str]],
    shares: Sequence[float] | None = None,
    salt: str | None = None,
    kind: str = AB,
    started_at: str | None = None,
    origin: str | None = None,
) -> dict[str, Any]:
    """A running experiment document (no checksums yet: the registry adds them when it writes it).

    ``shares`` (control first) default to equal shares; ``salt`` to a random one.
    """
    if not treatments:
        raise ExperimentError("treatments: name at least one treatment (MODEL:VERSION)")
    n_arms = 1 + len(treatments)
    if shares is None:
        shares = [1.0 / n_arms] * n_arms
    if len(shares) != n_arms:
        raise ExperimentError(f"shares: {len(shares)} given for {n_arms} arms (control first, then each treatment)")
    variants = [CONTROL, *treatment_variants(len(treatments))]
    arms = [
        ArmRef(variant, model, version, float(share)).as_dict()
        for variant, (model, version), share in zip(variants, [control, *treatments], shares, strict=True)
    ]
    doc: dict[str, Any] = {
        "name": name,
        "type": kind,
        "salt": salt if salt is not None else random.SystemRandom().getrandbits(64).to_bytes(8, "big").hex(),
        "status": RUNNING,
        "arms": arms,
        "started_at": started_at,
        "ended_at": None,
        "winner": None,
        "reason": None,
    }
    if origin is not None:
        doc["origin"] = origin
    return validate_document(doc, require_checksums=False)


def validate_document(doc: Mapping[str, Any], require_checksums: bool = True) -> dict[str, Any]:
    """A checked, normalised copy of an experiment document; :class:`ExperimentError` names what is wrong."""
    if not isinstance(doc, Mapping):
        raise ExperimentError(f"experiment document must be a JSON object, got {type(doc).__name__}")
    missing = [key for key in _REQUIRED if key not in doc]
    if missing:
        raise ExperimentError(f"experiment document lacks {missing}")
    unknown = sorted(set(doc) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ExperimentError(f"experiment document has unknown key(s) {unknown}")
    out: dict[str, Any] = {key: doc.get(key) for key in (*_REQUIRED, *_OPTIONAL) if key in doc}
    check_name("name", out["name"])
    if out["type"] not in EXPERIMENT_TYPES:
        raise ExperimentError(f"type={out['type']!r} must be one of {list(EXPERIMENT_TYPES)}")
    if not isinstance(out["salt"], str) or not _SALT_RE.match(out["salt"]):
        raise ExperimentError("salt must be 1..128 printable ASCII characters without spaces")
    if out["status"] not in STATUSES:
        raise ExperimentError(f"status={out['status']!r} must be one of {list(STATUSES)}")
    out["arms"] = _checked_arms(out["arms"], out["type"], require_checksums)
    variants = [arm["variant"] for arm in out["arms"]]
    if out.get("winner") is not None and out["winner"] not in variants:
        raise ExperimentError(f"winner={out['winner']!r} is not one of the arms {variants}")
    if out["status"] == CONCLUDED and out.get("winner") is None:
        raise ExperimentError("a concluded experiment names its winner")
    return out


def _checked_arms(raw: Any, kind: str, require_checksums: bool) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise ExperimentError("arms must list the control and at least one treatment")
    if kind == INTERLEAVING and len(raw) != 2:
        raise ExperimentError(f"an interleaving experiment has exactly two arms (control, treatment), got {len(raw)}")
    arms = []
    for n, arm in enumerate(raw):
        if not isinstance(arm, Mapping):
            raise ExperimentError(f"arms[{n}] must be an object")
        unknown = sorted(set(arm) - {"variant", "model_name", "version", "checksum", "share"})
        if unknown:
            raise ExperimentError(f"arms[{n}] has unknown key(s) {unknown}")
        share = arm.get("share")
        if isinstance(share, bool) or not isinstance(share, int | float) or not math.isfinite(share):
            raise ExperimentError(f"arms[{n}].share={share!r} must be a number")
        if not 0.0 < float(share) <= 1.0:
            raise ExperimentError(f"arms[{n}].share={share} must be within (0, 1]: every arm gets some traffic")
        checksum = arm.get("checksum")
        if checksum is not None and not isinstance(checksum, str):
            raise ExperimentError(f"arms[{n}].checksum must be a string")
        if require_checksums and not checksum:
            raise ExperimentError(f"arms[{n}] lacks the checksum of its published version")
        arms.append(
            ArmRef(
                check_name(f"arms[{n}].variant", arm.get("variant")),
                check_name(f"arms[{n}].model_name", arm.get("model_name")),
                check_name(f"arms[{n}].version", str(arm.get("version"))),
                float(share),
                checksum,
            ).as_dict()
        )
    if arms[0]["variant"] != CONTROL:
        raise ExperimentError(f"arms[0] is the control: its variant must be {CONTROL!r}, got {arms[0]['variant']!r}")
    variants = [arm["variant"] for arm in arms]
    if len(set(variants)) != len(variants):
        raise ExperimentError(f"arm variants must differ, got {variants}")
    if INTERLEAVED in variants:
        raise ExperimentError(f"{INTERLEAVED!r} is reserved for interleaved exposures; name the arm otherwise")
    total = sum(arm["share"] for arm in arms)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise ExperimentError(f"arm shares {[arm['share'] for arm in arms]} sum to {total:g}; they must sum to 1")
    if kind == INTERLEAVING and any(abs(arm["share"] - 0.5) > SHARE_TOLERANCE for arm in arms):
        raise ExperimentError(
            "an interleaving experiment shows both arms in every answer: its shares are 0.5,0.5 (leave --shares out)"
        )
    return arms


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes :func:`document_checksum` hashes."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def document_checksum(doc: Mapping[str, Any]) -> str:
    """sha256 of the document's canonical JSON without its ``checksum`` key."""
    return hashlib.sha256(canonical_json({k: v for k, v in doc.items() if k != "checksum"})).hexdigest()


# ---- assignment -------------------------------------------------------------------------------
def unit_point(salt: str, unit: str) -> float:
    """Where ``unit`` falls in [0, 1): the first 53 bits of sha256(salt, unit) as a fraction."""
    digest = hashlib.sha256(f"{salt}\x1f{unit}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def assign(salt: str, unit: str, shares: Sequence[float]) -> int:
    """The arm (index into ``shares``) of ``unit``: the share interval its salted hash falls in."""
    point = unit_point(salt, unit)
    edge = 0.0
    for index, share in enumerate(shares):
        edge += share
        if point < edge:
            return index
    return len(shares) - 1  # shares that sum to 1 - epsilon: the last arm takes the rounding


def interleaving_seed(salt: str, request_id: str) -> int:
    """The coin-flip seed of one interleaved request (reproducible from the exposure log)."""
    return int.from_bytes(hashlib.sha256(f"{salt}\x1e{request_id}".encode()).digest()[:8], "big")


def team_draft(
    first: Sequence[T], second: Sequence[T], k: int, coin: Callable[[], bool] | random.Random
) -> list[tuple[T, int]]:
    """Team-draft interleaving of two rankings (Radlinski, Kurup & Joachims, CIKM 2008), ``k`` items at most.

    Each round the team with fewer picks (a coin flip on a tie: ``True`` = ``first``) adds its
    highest-ranked item not yet in the merged list; returns ``(item, team)`` with team 0 for
    ``first`` and 1 for ``second``. So each team's picks are a prefix of its own ranking (minus items
    the other team took) and the teams' sizes differ by at most one. When one ranking runs out the
    paper stops; here the other team keeps filling up to ``k`` so the answer is never shorter than the
    union of the two lists allows.
    """
    flip = coin.random if isinstance(coin, random.Random) else None
    merged: list[tuple[T, int]] = []
    taken: set[T] = set()
    cursors = [0, 0]
    lists = (first, second)
    picks = [0, 0]

    def next_free(team: int) -> T | None:
        ranking = lists[team]
        while cursors[team] < len(ranking) and ranking[cursors[team]] in taken:
            cursors[team] += 1
        return ranking[cursors[team]] if cursors[team] < len(ranking) else None

    while len(merged) < k:
        heads = (next_free(0), next_free(1))
        if heads[0] is None and heads[1] is None:
            break
        if heads[0] is None or heads[1] is None:
            team = 0 if heads[1] is None else 1
        elif picks[0] != picks[1]:
            team = 0 if picks[0] < picks[1] else 1
        else:
            heads_up = flip() < 0.5 if flip is not None else bool(coin())  # type: ignore[operator]
            team = 0 if heads_up else 1
        item = heads[team]
        assert item is not None
        merged.append((item, team))
        taken.add(item)
        picks[team] += 1
    return merged
