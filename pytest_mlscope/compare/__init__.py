"""Verdicts: how an item compares with its baseline. Numbers in, verdict objects out; no I/O.

One policy, applied by the session, ``mlscope compare`` and the report alike (``verdict``). The
threshold T is the smallest slowdown the gate must catch: ``regression`` when the item's interval
lies wholly above +T/2 (and the family-wise one above zero), ``ok`` when it ends below +T,
``inconclusive`` otherwise (``_decide`` says why each rate holds).

Latency is judged on round medians, not raw samples: consecutive samples of one run share that
run's conditions (CPU frequency, neighbours, memory layout), so an interval from them alone is
far narrower than the run-to-run noise. Interleaved A/B pairs share the run, so drift cancels in
the per-pair ratio; a stored baseline needs the item's run-to-run noise from comparable stored
runs, and without it never calls a regression.

Order of decisions: no baseline and no A side → ``new``; an accuracy loss → ``regression``
(always, whatever the hardware); interleaved pairs → latency on the pairs; else a different
environment → ``incomparable`` (named), else the stored design; instructions decide instead
when both sides were counted on one environment, with the latency verdict kept beside them.

``verdicts`` holds the sides and the verdict, ``rules`` the decision statistics of each design,
``policy`` the order of decisions and whole-run comparisons. Every name stays importable here.
"""

from __future__ import annotations

from pytest_mlscope.compare.policy import (
    Noise,
    _accuracy_regression,
    _interleaved_latency,
    compare_runs,
    environment,
    run_sides,
    side_of,
    verdict,
)
from pytest_mlscope.compare.rules import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_THRESHOLD,
    _decide,
    _unpaired,
    count_verdict,
    decision_levels,
    latency_verdict,
    paired_verdict,
    settled,
)
from pytest_mlscope.compare.verdicts import (
    ACCURACY_TOLERANCE,
    MATERIAL_HOST_FACTS,
    Side,
    Verdict,
    VerdictKind,
    accuracy_changes,
    host_differences,
)

__all__ = [
    "ACCURACY_TOLERANCE",
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
    "DEFAULT_THRESHOLD",
    "MATERIAL_HOST_FACTS",
    "Noise",
    "Side",
    "Verdict",
    "VerdictKind",
    "_accuracy_regression",
    "_decide",
    "_interleaved_latency",
    "_unpaired",
    "accuracy_changes",
    "compare_runs",
    "count_verdict",
    "decision_levels",
    "environment",
    "host_differences",
    "latency_verdict",
    "paired_verdict",
    "run_sides",
    "settled",
    "side_of",
    "verdict",
]
