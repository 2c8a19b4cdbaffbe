"""Ad-copy metrics: compliance, length, diversity and policy flags of a set of variants.

A pure function of the texts and what the platform rules said about each one
(compliant or not, and the flags raised), so it does not depend on how the
rules are implemented; ``breakdown`` applies the platform rules and splits the
metrics by style and by platform. ``groups`` (e.g. the job id of each variant) scopes the
diversity measures: self-BLEU compares each variant with the *other variants
of its job* (BLEU-4 with pycocoevalcap's BleuScorer, the others as
references); lower self-BLEU and higher distinct-n mean more diverse copy.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocoevalcap.bleu.bleu_scorer import BleuScorer

from evaluation.errors import EvaluationError
from schemas.errors import ErrorCode

_TOKEN = re.compile(r"#?\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams (Li et al., 2016); 0.0 when there are none."""
    grams = [tuple(t[i : i + n]) for text in texts for t in [tokens(text)]
             for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str], groups: Sequence[str]) -> float | None:
    """Mean BLEU-4 of each variant against the other variants of its group."""
    by_group: dict[str, list[str]] = defaultdict(list)
    for text, group in zip(texts, groups, strict=True):
        by_group[group].append(" ".join(tokens(text)))
    scorer, count = BleuScorer(n=4), 0
    for members in by_group.values():
        for i, text in enumerate(members):
            others = members[:i] + members[i + 1 :]
            if others:
                scorer += (text, others)
                count += 1
    if count == 0:
        return None
    _, per_text = scorer.compute_score(option="closest", verbose=0)
    return float(np.mean(per_text[3]))


def _stats(values: Sequence[int]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "median": float(np.median(arr)),
            "p95": float(np.percentile(arr, 95)), "min": float(arr.min()),
            "max": float(arr.max())}


def ad_copy_metrics(
    texts: Sequence[str],
    compliant: Sequence[bool],
    flags: Sequence[Sequence[str]] | None = None,
    groups: Sequence[str] | None = None,
) -> dict[str, object]:
    if not texts:
        raise EvaluationError(ErrorCode.invalid_argument, "no ad-copy texts to measure")
    if len(compliant) != len(texts) or (flags is not None and len(flags) != len(texts)):
        raise EvaluationError(ErrorCode.invalid_argument, "one compliance value per text")
    flags = flags if flags is not None else [()] * len(texts)
    groups = groups if groups is not None else ["all"] * len(texts)
    flag_counts = Counter(f for fs in flags for f in fs)
    return {
        "texts": len(texts),
        "compliance_rate": sum(bool(c) for c in compliant) / len(texts),
        "length_chars": _stats([len(t) for t in texts]),
        "length_words": _stats([len(t.split()) for t in texts]),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "self_bleu_4": self_bleu(texts, groups),
        "flagged_rate": sum(1 for fs in flags if fs) / len(texts),
        "flags": dict(flag_counts.most_common()),
    }


def read_variants(path: Path) -> list[dict[str, Any]]:
    """Variants from a JSONL file: one variant per line ({style, platform, text[, flags,
    job_id]}), or one job per line as the API returns it (its ``variants`` list)."""
    if not path.is_file():
        raise EvaluationError(ErrorCode.file_not_found, f"variants file not found: {path}")
    out: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvaluationError(ErrorCode.malformed,
                                  f"{path}:{number}: not valid JSON ({exc})") from exc
        rows = ([{"job_id": row.get("id"), **v} for v in row["variants"]]
                if isinstance(row, dict) and "variants" in row else [row])
        for variant in rows:
            if not isinstance(variant, dict) or not {"style", "platform", "text"} <= set(variant):
                raise EvaluationError(ErrorCode.malformed,
                                      f"{path}:{number}: a variant needs style, platform, text")
            out.append(variant)
    return out


def breakdown(variants: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, object]]]:
    """The ad-copy metrics of each style and of each platform. A variant complies when
    its platform's rules (``schemas/checks/rules.py``) find no breach; its flags are the
    policy flags it was stored with."""
    from schemas.checks.rules import check
    from schemas.platforms import PLATFORMS

    unknown = sorted({str(v["platform"]) for v in variants} - set(PLATFORMS))
    if unknown:
        raise EvaluationError(ErrorCode.invalid_argument,
                              f"unknown platforms {unknown}; known: {sorted(PLATFORMS)}")
    out: dict[str, dict[str, dict[str, object]]] = {}
    for key in ("style", "platform"):
        groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for variant in variants:
            groups[str(variant[key])].append(variant)
        out[key] = {name: ad_copy_metrics(
            [str(v["text"]) for v in rows],
            [not check(str(v["text"]), PLATFORMS[str(v["platform"])]) for v in rows],
            [list(v.get("flags") or ()) for v in rows],
            [str(v.get("job_id") or i) for i, v in enumerate(rows)],
        ) for name, rows in sorted(groups.items())}
    return out
