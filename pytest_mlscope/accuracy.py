"""Accuracy metrics and output comparison: dataset top-k, golden outputs, cross-framework agreement.

Pure numpy, no I/O: the worker loads the arrays and hands them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pytest_mlscope.protocol import AccuracyCheck, AccuracyReport

if TYPE_CHECKING:
    from pytest_mlscope.manifest import AccuracySpec, Agreement


def postprocess(outputs: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    x = np.asarray(outputs, dtype=np.float64)
    for step in steps:
        if step == "softmax":
            shifted = x - x.max(axis=-1, keepdims=True)
            e = np.exp(shifted)
            x = e / e.sum(axis=-1, keepdims=True)
        elif step == "sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
    return x


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    scores = np.asarray(scores).reshape(len(labels), -1)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))


def top1_match(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a).reshape(len(a), -1)
    b = np.asarray(b).reshape(len(b), -1)
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def _closeness(
    name: str, actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float
) -> tuple[bool, float, str]:
    if actual.shape != expected.shape:
        return False, float("nan"), f"{name}: shape {actual.shape} != expected {expected.shape}"
    diff = np.abs(actual - expected)
    max_abs = float(diff.max()) if diff.size else 0.0
    excess = diff - (atol + rtol * np.abs(expected))
    ok = bool(np.all(excess <= 0))
    worst = int(np.argmax(excess)) if diff.size else 0
    detail = f"max |diff| {max_abs:.3g} (atol {atol:g}, rtol {rtol:g})"
    if not ok:
        index = np.unravel_index(worst, diff.shape)
        detail += (
            f"; worst at {tuple(int(i) for i in index)}: got {actual[index]:.6g}, "
            f"expected {expected[index]:.6g}"
        )
    return ok, max_abs, detail


def _departure(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per prompt, the index of the first new token that differs (the length when none)."""
    differs = actual != expected
    return np.where(differs.any(axis=1), differs.argmax(axis=1), actual.shape[1])


def _token_golden(actual: np.ndarray, expected: np.ndarray) -> AccuracyCheck:
    """Greedy decoding is deterministic: the same model gives the same tokens, so a golden of
    token ids is matched exactly, prompt by prompt."""
    if actual.shape != expected.shape:
        return AccuracyCheck(
            name="golden",
            passed=False,
            detail=f"golden: shape {actual.shape} != expected {expected.shape} "
            "(prompts, new tokens)",
        )
    departs = _departure(actual, expected)
    same = int(np.sum(departs == actual.shape[1]))
    detail = f"{same}/{len(actual)} prompts token for token"
    if same < len(actual):
        prompt = int(np.argmin(departs))
        at = int(departs[prompt])
        detail += (
            f"; prompt {prompt} departs at new token {at}: got {int(actual[prompt, at])}, "
            f"expected {int(expected[prompt, at])}"
        )
    return AccuracyCheck(
        name="golden", passed=same == len(actual), value=same / len(actual), detail=detail
    )


def _token_agreement(
    actual: np.ndarray,
    reference: np.ndarray,
    spec: Agreement,
    reference_name: str,
    prefill: np.ndarray | None = None,
    reference_prefill: np.ndarray | None = None,
) -> AccuracyCheck:
    """Two frameworks' greedy tokens after the same prompts.

    The first new token is the prefill's decision. It agrees when it is the reference's, or,
    where both sides' next-token logits are known, when the reference found it at least
    ``near_tie`` times as likely as its own choice: a quantized model legitimately picks the
    other side of a near-tie, a broken one picks what the reference finds unlikely. It must
    agree on ``top1_match`` of the prompts. After a first difference each model continues a
    different text, so the continuation is reported (tokens matched before the parting), with
    the overlap of the two sides' top 5 after the prompt, not judged.
    """
    if actual.shape != reference.shape:
        return AccuracyCheck(
            name="agreement",
            passed=False,
            detail=f"vs {reference_name}: shape {actual.shape} != {reference.shape}",
        )
    departs = _departure(actual, reference)
    same = departs > 0
    agrees, overlap = same, ""
    if prefill is not None and reference_prefill is not None:
        rows = np.arange(len(actual))
        ref = reference_prefill - reference_prefill.max(axis=1, keepdims=True)
        likelihood = np.exp(ref[rows, actual[:, 0]])  # of the item's token, the top's being 1
        agrees = same | (likelihood >= spec.near_tie)
        top_a = np.argsort(-prefill, axis=1)[:, :5]
        top_r = np.argsort(-reference_prefill, axis=1)[:, :5]
        shared = np.mean([len(set(a) & set(r)) / 5 for a, r in zip(top_a, top_r, strict=True)])
        overlap = f"; top-5 overlap after the prompt {shared:.2f}"
    fraction = float(np.mean(agrees))
    ties = int(np.sum(agrees & ~same))
    return AccuracyCheck(
        name="agreement",
        passed=fraction >= spec.top1_match,
        value=fraction,
        detail=f"vs {reference_name}: first new token agrees on {fraction:.3f} of the prompts "
        f"(min {spec.top1_match:g}; {ties} near-tie{'s' if ties != 1 else ''} within "
        f"{spec.near_tie:g} of the reference's choice){overlap}; "
        f"{float(np.mean(departs)):.1f} of {actual.shape[1]} tokens match before the "
        "continuations part, on average",
    )


def pair_similarities(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of samples 2i and 2i+1, for every pair i."""
    x = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", x[0::2], x[1::2])


def ranking_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """The fraction of (positive, negative) combinations in which the positive scores higher,
    ties counting half: the ROC AUC (the Mann-Whitney U over the product of the counts).
    Counted with numpy: importing scipy here would add its 30 MiB to the model's memory, which
    the worker measures over the accuracy pass."""
    p = np.asarray(positive, dtype=np.float64)[:, None]
    n = np.asarray(negative, dtype=np.float64)[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


def _paraphrase_check(
    target: float, outputs: np.ndarray, pair_labels: np.ndarray | None
) -> AccuracyCheck:
    if pair_labels is None or len(outputs) != 2 * len(pair_labels):
        return AccuracyCheck(
            name="paraphrase", passed=False, detail="the dataset has no labelled sentence pairs"
        )
    similarity = pair_similarities(outputs)
    positive, negative = similarity[pair_labels == 1], similarity[pair_labels == 0]
    if not len(positive) or not len(negative):
        return AccuracyCheck(
            name="paraphrase",
            passed=False,
            detail=f"needs paraphrase and unrelated pairs: the dataset has {len(positive)} "
            f"paraphrase and {len(negative)} unrelated",
        )
    auc = ranking_auc(positive, negative)
    return AccuracyCheck(
        name="paraphrase",
        passed=auc >= target,
        value=auc,
        detail=f"paraphrases ranked above unrelated pairs in {auc:.3f} of combinations "
        f"(min {target:g}); mean cosine {positive.mean():.3f} paraphrase, "
        f"{negative.mean():.3f} unrelated, over {len(positive)} + {len(negative)} pairs",
    )


def assess(
    spec: AccuracySpec,
    outputs: np.ndarray,
    labels: np.ndarray | None,
    *,
    reference: np.ndarray | None = None,
    reference_name: str | None = None,
    golden: np.ndarray | None = None,
    pair_labels: np.ndarray | None = None,
    prefill: np.ndarray | None = None,
    reference_prefill: np.ndarray | None = None,
) -> AccuracyReport:
    """Every accuracy check the manifest asks for, each with its value and a readable detail."""
    checks: list[AccuracyCheck] = []
    if spec.paraphrase is not None:
        checks.append(_paraphrase_check(spec.paraphrase.min, outputs, pair_labels))
    top1 = top5 = None
    if labels is not None:
        top1 = topk_accuracy(outputs, labels, 1)
        top5 = topk_accuracy(outputs, labels, 5)
    for k, target, value in ((1, spec.top1, top1), (5, spec.top5, top5)):
        if target is None:
            continue
        if value is None:
            checks.append(
                AccuracyCheck(name=f"top{k}", passed=False, detail="the dataset has no labels")
            )
        else:
            checks.append(
                AccuracyCheck(
                    name=f"top{k}",
                    passed=value >= target.min,
                    value=value,
                    detail=f"top-{k} {value:.4f} (min {target.min:g}) on {len(labels)} samples",
                )
            )
    tokens = np.issubdtype(outputs.dtype, np.integer)  # the generate scenario's new token ids
    if spec.golden is not None and golden is not None and tokens:
        checks.append(_token_golden(outputs, golden.astype(np.int64)))
    elif spec.golden is not None and golden is not None:
        ok, max_abs, detail = _closeness(
            "golden", outputs, golden, spec.golden.atol, spec.golden.rtol
        )
        checks.append(AccuracyCheck(name="golden", passed=ok, value=max_abs, detail=detail))
    if spec.agreement is not None and reference is not None and tokens:
        name = reference_name or spec.agreement.reference
        ref = reference.astype(np.int64)
        checks.append(
            _token_agreement(outputs, ref, spec.agreement, name, prefill, reference_prefill)
        )
    elif spec.agreement is not None and reference is not None:
        agreement = spec.agreement
        match = top1_match(outputs, reference) if outputs.shape == reference.shape else 0.0
        ok, max_abs, detail = _closeness(
            "agreement", outputs, reference, agreement.atol, agreement.rtol
        )
        checks.append(
            AccuracyCheck(
                name="agreement",
                passed=ok and match >= agreement.top1_match,
                value=max_abs,
                detail=f"vs {reference_name or agreement.reference}: top-1 match {match:.3f} "
                f"(min {agreement.top1_match:g}), {detail}",
            )
        )
    return AccuracyReport(checks=checks, samples=len(outputs), top1=top1, top5=top5)
