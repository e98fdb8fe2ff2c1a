"""The study page at ``/studies/<Study Instance UID>``: one study, everything the node knows.

Per image: its thumbnail, the heat map as the Secondary Capture shows it, the image's
probability against the operating point, the probability of every label, the
ensemble's disagreement, the regions and the timings; then the breasts and the study
(per model, for a study whose mammograms and ultrasound images two models inferred);
the deliveries per destination with their last error; the event log. A failed or skipped
study shows its whole reason. Pictures are PNG files the worker made when it built the
result (:mod:`node.outputs.pictures`), served as they are.

Plain HTML with inline CSS and no scripts. Studies are shown by accession number and
UIDs only, never by patient, and every value is HTML-escaped. With ``http.token`` set
the page offers the admin actions (:mod:`node.http.actions`) as POST forms; without one
it is read-only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from node import __version__
from node.db.models import StudyState
from node.db.reads import show_study
from node.errors import NodeError
from node.http.actions import csrf_token
from node.http.view import NodeView
from node.outputs.pictures import picture_name
from node.results import stored_parts

__all__ = ["picture_file", "render_study_page", "study_path"]

_PICTURE = re.compile(r"[0-9.]{1,64}(-thumb|-heatmap)?\.png")

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 80em; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.15em; margin: 1.2em 0 .3em; }
.note { color: #a00; margin: 0 0 1em; }
table { border-collapse: collapse; margin: .3em 0 1em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.uid { font-family: ui-monospace, monospace; font-size: .9em; }
.positive { color: #b00; font-weight: bold; } .negative { color: #070; }
.reason { white-space: pre-wrap; border: 1px solid #d99; background: #fff4f4; padding: .5em; }
.image { border-top: 2px solid #ddd; padding-top: .6em; margin-top: .8em; }
.pictures img { margin: 0 .6em .4em 0; border: 1px solid #ccc; max-width: 46%; height: auto;
  vertical-align: top; }
.thumbs img { margin: 0 .3em .3em 0; border: 1px solid #ccc; }
form { display: inline-block; margin-right: 1em; }
"""


def study_path(study_uid: str) -> str:
    """The page's path for a study."""
    return f"/studies/{quote(study_uid, safe='')}"


def picture_file(view: NodeView, study_uid: str, generation: int, name: str) -> bytes | None:
    """A picture's bytes, or ``None``; only names :mod:`node.outputs.pictures` makes."""
    if not _PICTURE.fullmatch(name):
        return None
    path = view.spool.path(view.spool.picture_path(study_uid, generation, name))
    try:
        return path.read_bytes()
    except OSError:
        return None


def _text(value: Any, empty: str = "-") -> str:
    return escape(empty if value is None or value == "" else str(value))


def _prob(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{100 * float(value):.1f} %"


def _time(iso: Any) -> str:
    return escape(str(iso or "-")[:19].replace("T", " "))


def _against(score: Any, threshold: Any) -> str:
    """``12.3 % (at or above the operating point)`` with a class for colour."""
    if not isinstance(score, int | float) or not isinstance(threshold, int | float):
        return _prob(score)
    above = score >= threshold
    word = "at or above" if above else "below"
    css = "positive" if above else "negative"
    return f'<span class="{css}">{_prob(score)}</span> ({word} the operating point)'


def _rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _picture_url(study_uid: str, generation: int, name: str) -> str:
    return f"{study_path(study_uid)}/pictures/{generation}/{quote(name)}"


def _image_section(
    image: Mapping[str, Any],
    result: Mapping[str, Any],
    study_uid: str,
    generation: int,
    available: set[str],
) -> str:
    uid = str(image.get("sop_instance_uid", ""))
    threshold = result.get("threshold")
    pictures = []
    for kind, alt in (("", "image"), ("heatmap", "heat map as the Secondary Capture shows it")):
        name = picture_name(uid, kind)
        if name in available:
            url = escape(_picture_url(study_uid, generation, name))
            pictures.append(f'<a href="{url}"><img src="{url}" alt="{escape(alt)}"></a>')
    if not pictures:
        pictures.append("<p>No pictures for this image.</p>")
    labels = image.get("class_probabilities") or {}
    predicted = image.get("predicted_class")
    label_rows = [
        [_text(label) + (" (highest)" if label == predicted else ""), _prob(p)]
        for label, p in labels.items()
    ]
    members = image.get("member_probabilities") or {}
    member_rows = [[_text(name), _prob(p)] for name, p in members.items()]
    region_rows = []
    for number, region in enumerate(image.get("regions") or [], start=1):
        score = region.get("score", region.get("peak"))
        point = region.get("peak_point") or []
        region_rows.append(
            [
                str(number),
                _against(score, threshold) if "score" in region else _text(score),
                _text(", ".join(f"{v:.0f}" for v in point) if point else None),
                _text(f"{float(region.get('area', 0)):.0f}"),
            ]
        )
    timings = image.get("timings") or {}
    return f"""
<div class="image" id="image-{escape(uid)}">
<h3><span class="uid">{escape(uid)}</span> {_text(image.get("modality"))}
{_text(image.get("laterality"))} {_text(image.get("view"), "")}</h3>
<div class="pictures">{"".join(pictures)}</div>
<table>
<tr><th>malignancy probability</th><td>{_against(image.get("probability"), threshold)}</td></tr>
<tr><th>disagreement (weighted SD of the members)</th>
<td>{_prob(image.get("uncertainty"))}</td></tr>
<tr><th>laterality from</th><td>{_text(image.get("laterality_source"))}</td></tr>
</table>
<h4>Probability of each label</h4>
{_rows(["label", "probability"], label_rows)}
<h4>Members</h4>
{_rows(["member", "malignancy probability"], member_rows)}
<h4>Regions</h4>
{_rows(["#", "score", "peak (x, y)", "area (pixels)"], region_rows) if region_rows else "None."}
<h4>Timings (s)</h4>
{_timings(timings)}
</div>"""


def _timings(timings: Mapping[str, Any]) -> str:
    if not timings:
        return ""
    values = [
        _text(f"{float(v):.3f}") if isinstance(v, int | float) else _text(v)
        for v in timings.values()
    ]
    return _rows(list(timings), [values])


def _thumbs(
    images: Sequence[Mapping[str, Any]], uid: str, generation: int, available: set[str]
) -> str:
    links = []
    for image in images:
        sop = str(image.get("sop_instance_uid"))
        name = picture_name(sop, "thumb")
        if name in available:
            url = escape(_picture_url(uid, generation, name))
            links.append(f'<a href="#image-{escape(sop)}"><img src="{url}" alt="thumbnail"></a>')
    return "".join(links)


def _part(
    part: Mapping[str, Any], uid: str, generation: int, available: set[str], several: bool
) -> str:
    """One model's part of a result: its decision against its operating point, its
    breasts, then each of its images."""
    threshold = part.get("threshold")
    breasts = [
        [
            _text(b.get("laterality")),
            _against(b.get("score"), threshold),
            _text(b.get("assessment_category")),
        ]
        for b in part.get("breasts") or []
    ]
    model = part.get("model") or {}
    images = part.get("images") or []
    sections = "".join(_image_section(i, part, uid, generation, available) for i in images)
    scope = " and ".join(dict.fromkeys(str(i.get("modality")) for i in images))
    title = f"<h2>{_text(scope)} images: model {_text(model.get('name'))}</h2>" if several else ""
    what = "these images" if several else "study"
    return f"""{title}
<table>
<tr><th>{what}: malignancy probability</th><td>{_against(part.get("score"), threshold)}</td></tr>
<tr><th>operating point</th><td>{_text(part.get("operating_point"))}: {_prob(threshold)}</td></tr>
<tr><th>assessment category</th><td>{_text(part.get("assessment_category"))}</td></tr>
<tr><th>model</th><td>{_text(model.get("name"))} {_text(model.get("version"))},
TTA {_text(part.get("tta"))}</td></tr>
</table>
<h3>Breasts</h3>
{_rows(["laterality", "score", "assessment category"], breasts)}
<h3>Images</h3>
<div class="thumbs">{_thumbs(images, uid, generation, available)}</div>
{sections}
"""


def _result(latest: Mapping[str, Any], uid: str, generation: int, available: set[str]) -> str:
    """The result section: per model's part, its decision against its operating point,
    its breasts, then each image; a study inferred by several models says so first."""
    detail = latest.get("detail") or {}
    parts = stored_parts(detail)
    if latest.get("outcome") != "result" or not parts:
        return (
            f"<h2>Result (generation {generation}): {_text(latest.get('outcome'))}</h2>"
            f'<div class="reason">{_text(latest.get("reason"))}</div>'
        )
    several = len(parts) > 1
    overview = ""
    if several:
        models = ", ".join(
            f"{_text(m.get('name'))} {_text(m.get('version'))}" for m in detail.get("models") or []
        )
        decision = "positive" if detail.get("positive") else "negative"
        overview = (
            f"<p>Inferred part by part by {len(parts)} models ({models}), each at its own "
            f"operating point: the study is <b>{decision}</b>, highest probability "
            f"{_prob(detail.get('score'))}, assessment category "
            f"{_text(detail.get('assessment_category'))}.</p>"
        )
    left = [
        [
            f'<span class="uid">{_text(i.get("sop_instance_uid"))}</span>',
            _text(i.get("modality")),
            _text(i.get("reason")),
        ]
        for i in detail.get("left_out") or []
    ]
    left_out = "<h2>Not inferred</h2>" + _rows(["image", "modality", "why"], left) if left else ""
    body = "".join(_part(p, uid, generation, available, several) for p in parts)
    return f"""
<h2>Result (generation {generation})</h2>
{overview}
<h2>Timings (s)</h2>
{_timings(latest.get("timings") or {})}
{body}
{left_out}
"""


def _earlier(rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return ""
    return "<h2>Earlier results</h2>" + _rows(["generation", "outcome", "score", "reason"], rows)


def _deliveries(deliveries: Sequence[Mapping[str, Any]], generation: int) -> str:
    by_destination: dict[str, list[Mapping[str, Any]]] = {}
    for d in deliveries:
        if d.get("generation") == generation:
            by_destination.setdefault(str(d.get("destination")), []).append(d)
    rows = []
    for name, items in sorted(by_destination.items()):
        states: dict[str, int] = {}
        for d in items:
            states[str(d.get("state"))] = states.get(str(d.get("state")), 0) + 1
        last = max(items, key=lambda d: str(d.get("sent_at") or ""))
        errors = [d for d in items if d.get("last_error")]
        rows.append(
            [
                _text(name),
                _text(", ".join(f"{k}: {v}" for k, v in sorted(states.items()))),
                _text(max(int(d.get("attempts") or 0) for d in items)),
                _text(last.get("last_status")),
                _text(errors[-1].get("last_error") if errors else None),
                _time(last.get("sent_at")),
            ]
        )
    if not rows:
        return "<p>No deliveries for this generation.</p>"
    header = ["destination", "objects by state", "attempts", "last status", "last error", "sent"]
    return _rows(header, rows)


def _actions(view: NodeView, study: Mapping[str, Any]) -> str:
    secret = view.settings.http.token
    if not secret:
        return "<p>Read-only: set <code>http.token</code> to retry or reprocess from here.</p>"
    uid = str(study["study_uid"])
    forms = []
    allowed = {"reprocess": study["state"] != StudyState.RECEIVING.value}
    allowed["retry"] = study["state"] == StudyState.FAILED.value
    for action, label in (("retry", "Retry"), ("reprocess", "Reprocess")):
        if not allowed[action]:
            continue
        target = escape(f"{study_path(uid)}/{action}")
        token = escape(csrf_token(secret, action, uid))
        forms.append(
            f'<form method="post" action="{target}">'
            f'<input type="hidden" name="csrf" value="{token}">'
            f'<button type="submit">{label}</button></form>'
        )
    return "".join(forms) or "<p>No action applies to this study now.</p>"


def render_study_page(view: NodeView, study_uid: str, *, message: str | None = None) -> str | None:
    """The page of ``study_uid`` as an HTML document; ``None`` when there is no such study."""
    try:
        known = show_study(view.read_factory, study_uid)
    except NodeError:
        return None
    study = known["study"]
    uid = str(study["study_uid"])
    results = known["results"]
    latest = results[-1] if results else None
    generation = int(latest["generation"]) if latest else int(study["generation"])
    folder = view.spool.path(view.spool.picture_path(uid, generation, "x")).parent
    available = {p.name for p in folder.glob("*.png")} if folder.is_dir() else set()

    reason = ""
    if study.get("reason"):
        reason = (
            f"<h2>Why it is {_text(study['state'])}</h2>"
            f'<div class="reason">{_text(study["reason"])}</div>'
        )
    summary = _rows(
        ["accession", "state", "generation", "instances", "first received (UTC)", "changed (UTC)"],
        [
            [
                _text(study.get("accession_number")),
                _text(study.get("state")),
                _text(study.get("generation")),
                _text(known["instances"]["count"]),
                _time(study.get("first_received_at")),
                _time(study.get("state_changed_at")),
            ]
        ],
    )

    body = _result(latest, uid, generation, available) if latest else ""
    earlier = [
        [
            _text(r.get("generation")),
            _text(r.get("outcome")),
            _prob(r.get("score")),
            _text(r.get("reason")),
        ]
        for r in results[:-1]
    ]
    events = [
        [_time(e.get("at")), _text(e.get("kind")), _text(json.dumps(e.get("detail"), default=str))]
        for e in known["events"]
    ]
    note = f'<p class="note">{_text(message)}</p>' if message else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Study {_text(study.get("accession_number") or uid)}</title>
<style>{_STYLE}</style>
</head>
<body>
<p><a href="/">&larr; all studies</a></p>
<h1>Study <span class="uid">{escape(uid)}</span></h1>
<p class="note">AI result, not for clinical use. Breast AI Node {escape(__version__)}.</p>
{note}
{summary}
{reason}
<h2>Actions</h2>
{_actions(view, study)}
{body}
<h2>Deliveries</h2>
{_deliveries(known["deliveries"], generation)}
{_earlier(earlier)}
<h2>Events</h2>
{_rows(["at (UTC)", "kind", "detail"], events)}
</body>
</html>
"""
