"""One study as text, for ``breast-node show``: what the model said about each image
(every label's probability, the ensemble's disagreement, the regions at or above the
operating point), the breasts and the study against the operating point, where the
results went, and why a study failed. A study inferred part by part by several models
(mammograms and ultrasound) shows each part with its model and operating point.
Accession number and UIDs only, never patient data; ``show --json`` prints everything
the node knows instead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from node.results import stored_parts

__all__ = ["study_summary"]


def _pct(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{100 * float(value):.1f} %"


def _verdict(score: Any, threshold: Any) -> str:
    if not isinstance(score, int | float) or not isinstance(threshold, int | float):
        return _pct(score)
    side = "at or above" if score >= threshold else "below"
    return f"{_pct(score)} ({side} the operating point)"


def _regions(image: Mapping[str, Any], threshold: Any) -> list[str]:
    regions = image.get("regions") or []
    scored = [r for r in regions if isinstance(r.get("score"), int | float)]
    if regions and not scored:
        return [f"      {len(regions)} region(s), without a calibrated score"]
    marked = [r for r in scored if isinstance(threshold, int | float) and r["score"] >= threshold]
    if not marked:
        return ["      no region at or above the operating point"]
    lines = []
    for number, region in enumerate(marked, start=1):
        x, y = (region.get("peak_point") or [0.0, 0.0])[:2]
        lines.append(
            f"      region {number}: {_pct(region['score'])} at ({x:.0f}, {y:.0f}), "
            f"{float(region.get('area', 0)):.0f} pixels"
        )
    return lines


def _images(detail: Mapping[str, Any]) -> list[str]:
    threshold = detail.get("threshold")
    lines = ["  images:"]
    for image in detail.get("images") or []:
        where = " ".join(
            str(image.get(k) or "") for k in ("modality", "laterality", "view") if image.get(k)
        )
        labels = ", ".join(
            f"{label} {_pct(p)}" for label, p in (image.get("class_probabilities") or {}).items()
        )
        lines.append(f"    {image.get('sop_instance_uid')} {where}")
        lines.append(f"      malignancy {_verdict(image.get('probability'), threshold)}")
        lines.append(f"      labels: {labels}; disagreement {_pct(image.get('uncertainty'))}")
        lines.extend(_regions(image, threshold))
    return lines


def _part(part: Mapping[str, Any], several: bool) -> list[str]:
    threshold = part.get("threshold")
    model = part.get("model") or {}
    scope = " and ".join(dict.fromkeys(str(i.get("modality")) for i in part.get("images") or []))
    head = f"  {scope} images: " if several else "  "
    lines = [
        f"{head}model {model.get('name')} {model.get('version')}, "
        f"operating point {part.get('operating_point')} = {_pct(threshold)}",
        f"  {'part' if several else 'study'}: {_verdict(part.get('score'), threshold)}, "
        f"category {part.get('assessment_category')}",
    ]
    for breast in part.get("breasts") or []:
        lines.append(
            f"  breast {breast.get('laterality')}: {_verdict(breast.get('score'), threshold)}, "
            f"category {breast.get('assessment_category')}"
        )
    return lines + _images(part)


def _result(result: Mapping[str, Any]) -> list[str]:
    detail = result.get("detail") or {}
    generation = result.get("generation")
    parts = stored_parts(detail)
    if result.get("outcome") != "result" or not parts:
        return [f"  result (generation {generation}): {result.get('outcome')}"]
    several = len(parts) > 1
    if not several:
        first, *rest = _part(parts[0], several)
        return [f"  result (generation {generation}): {first.strip()}", *rest, *_left(detail)]
    lines = [f"  result (generation {generation}):"]
    decision = "positive" if detail.get("positive") else "negative"
    lines.append(
        f"  study: {_pct(detail.get('score'))} (highest part), {decision} at its parts' "
        f"operating points, category {detail.get('assessment_category')}"
    )
    for part in parts:
        lines.extend(_part(part, several))
    return lines + _left(detail)


def _left(detail: Mapping[str, Any]) -> list[str]:
    return [
        f"  not inferred: {item.get('sop_instance_uid')} {item.get('modality')}: "
        f"{item.get('reason')}"
        for item in detail.get("left_out") or []
    ]


def _deliveries(deliveries: Sequence[Mapping[str, Any]], generation: Any) -> list[str]:
    by_destination: dict[str, list[Mapping[str, Any]]] = {}
    for d in deliveries:
        if d.get("generation") == generation:
            by_destination.setdefault(str(d.get("destination")), []).append(d)
    if not by_destination:
        return []
    lines = [f"  deliveries (generation {generation}):"]
    for name, items in sorted(by_destination.items()):
        states: dict[str, int] = {}
        for d in items:
            states[str(d.get("state"))] = states.get(str(d.get("state")), 0) + 1
        counts = ", ".join(f"{state} {count}" for state, count in sorted(states.items()))
        errors = [str(d["last_error"]) for d in items if d.get("last_error")]
        lines.append(f"    {name}: {counts}" + (f"; last error: {errors[-1]}" if errors else ""))
    return lines


def study_summary(known: Mapping[str, Any]) -> str:
    """The text of :func:`node.db.reads.show_study`'s data."""
    study = known["study"]
    lines = [
        f"study {study['study_uid']} (accession {study.get('accession_number') or '-'})",
        f"  state: {study['state']}, generation {study['generation']}, "
        f"{known['instances']['count']} instances, first received "
        f"{str(study.get('first_received_at'))[:19].replace('T', ' ')} UTC",
    ]
    if study.get("reason"):
        lines.append(f"  reason: {study['reason']}")
    results = known.get("results") or []
    if results:
        lines.extend(_result(results[-1]))
    lines.extend(_deliveries(known.get("deliveries") or [], study["generation"]))
    lines.append(f"  events: {len(known.get('events') or [])} (show --json lists them)")
    return "\n".join(lines)
