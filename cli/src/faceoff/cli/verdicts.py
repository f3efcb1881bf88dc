"""What a receipt says about each ``--check`` recogniser, in words a person understands.

A photo is protected against a recogniser when the recogniser no longer picks the person out of
a gallery of the person and public figures (the evaluator's decoys): the verdict's ``rank`` is
then above 1. A recogniser whose model the protection attacked (``white_box``) or consulted
(``in_loop``) is no judge: whatever it answers says nothing about recognisers the protection
never saw. Cloud APIs rank no gallery; their verdict is a verification against the person's
photos only. The functions here read the verdicts of a JSON receipt
(:meth:`faceoff.sdk.Verdict.to_json`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ordinal", "overall_line", "verdict_line", "verdict_word"]


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ..., ``11th``, ``12th``, ``13th``, ``21st``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _judge(v: dict[str, Any]) -> bool:
    """An independent recogniser that ranked the person (its answer says whether the photo is protected)."""
    return (
        v.get("configured", True)
        and not v.get("error")
        and not v.get("white_box")
        and not v.get("in_loop")
        and v.get("rank") is not None
    )


def verdict_word(v: dict[str, Any]) -> str:
    """One recogniser's verdict in a word or two, for the batch summary table.

    ``protected`` (not identified among the decoys), ``NOT protected`` (still identified),
    ``white-box`` or ``in-loop`` (no judge), ``match`` / ``no match`` (a cloud API's
    verification only), ``n/a`` (not configured), or the error's kind.
    """
    if not v.get("configured", True):
        return "n/a"
    if v.get("error"):
        return str(v.get("error_kind") or "error")
    if v.get("in_loop"):
        return "in-loop"
    if v.get("white_box"):
        return "white-box"
    if v.get("rank") is not None:
        return "NOT protected" if v.get("identified") else "protected"
    if "match" in v:
        return "match" if v["match"] else "no match"
    return "-"


def verdict_line(v: dict[str, Any]) -> str:
    """One recogniser's verdict as a sentence (without indentation)."""
    name = v["recognizer"]
    rank = v.get("rank")
    size = v.get("gallery_size")
    where = f"you rank {ordinal(rank)} of {size}" if rank is not None else ""
    if not v.get("configured", True):
        return f"{name}: not configured here (no credentials, or this evaluator does not run it)"
    if v.get("error"):
        return f"{name}: could not check ({v.get('error_kind') or 'error'}): {v['error']}"
    if v.get("in_loop"):
        return f"{name}: consulted while protecting this photo: says nothing" + (
            f" ({where})" if where else ""
        )
    if v.get("white_box"):
        return f"{name}: attacked by this profile: says nothing" + (f" ({where})" if where else "")
    if rank is not None:
        if v.get("identified"):
            return (
                f"{name}: still identifies you (rank 1 of {size}) — "
                "not protected against this recogniser"
            )
        return f"{name}: not identified — {where} (protected)"
    if "match" in v:
        score = f"confidence {v['confidence']:.2f}, threshold {v['threshold']:.2f}"
        if v["match"]:
            return (
                f"{name}: still matches you to your photos ({score}) — "
                "not protected against this recogniser"
            )
        return (
            f"{name}: no longer matches you to your photos ({score}); verification only, no gallery"
        )
    return f"{name}: no answer about you (no reference photos to compare with)"


def overall_line(verdicts: Sequence[dict[str, Any]]) -> str:
    """Whether the photo is protected, from the independent recognisers that ranked the person."""
    judges = [v for v in verdicts if _judge(v)]
    if not judges:
        return (
            "protection not measured: no independent recogniser ranked you "
            "(ask one with --check dlib,mobilefacenet)"
        )
    still = [v["recognizer"] for v in judges if v.get("identified")]
    fooled = [v["recognizer"] for v in judges if not v.get("identified")]
    if not still:
        return f"protected: no independent recogniser checked still identifies you ({', '.join(fooled)})"
    if not fooled:
        return (
            "NOT protected: every independent recogniser checked still identifies you "
            f"({', '.join(still)})"
        )
    return (
        f"partly protected: {', '.join(fooled)} no longer identif{'ies' if len(fooled) == 1 else 'y'} "
        f"you; {', '.join(still)} still do{'es' if len(still) == 1 else ''}"
    )
