"""The status page at ``/``: health, studies by state, and the latest studies.

Plain HTML with inline CSS, no scripts; refreshes itself every 15 seconds. Studies are
shown by accession number and Study Instance UID only, never by patient, and every
value is HTML-escaped. Each study links to its page (:mod:`node.http.study`).
"""

from __future__ import annotations

from html import escape
from typing import Any

from node import __version__
from node.db.reads import StudyRow, count_by_state, list_studies
from node.http.health import check_health
from node.http.study import study_path
from node.http.view import NodeView

__all__ = ["render_status_page"]

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
.note { color: #a00; margin: 0 0 1em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.uid { font-family: ui-monospace, monospace; font-size: .9em; }
.ok { color: #070; } .bad { color: #b00; font-weight: bold; }
.state-done { color: #070; } .state-failed { color: #b00; font-weight: bold; }
.state-skipped { color: #777; }
"""


def _text(value: Any, empty: str = "-") -> str:
    return escape(empty if value is None or value == "" else str(value))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _score(row: StudyRow) -> str:
    if row.score is None:
        return "-"
    flag = " positive" if row.positive else ""
    return f"{row.score:.3f}{flag}"


def _time(iso: str) -> str:
    return escape(iso[:19].replace("T", " "))


def _study_row(row: StudyRow) -> str:
    deliveries = ", ".join(f"{k}: {v}" for k, v in sorted(row.deliveries.items()))
    state = _text(row.state)
    reason = f"<br><small>{_text(row.reason)}</small>" if row.reason else ""
    cells = [
        f"<td>{_text(row.accession_number)}</td>",
        f'<td class="uid"><a href="{escape(study_path(row.study_uid))}">'
        f"{_text(row.study_uid)}</a></td>",
        f'<td class="state-{state}">{state}{reason}</td>',
        f'<td class="num">{row.generation}</td>',
        f'<td class="num">{row.instances}</td>',
        f'<td class="num">{_text(_score(row))}</td>',
        f"<td>{_text(row.assessment)}</td>",
        f'<td class="num">{_seconds(row.queue_wait_seconds)}</td>',
        f'<td class="num">{_seconds(row.inference_seconds)}</td>',
        f"<td>{_text(deliveries)}</td>",
        f"<td>{_time(row.first_received_at)}</td>",
        f"<td>{_time(row.state_changed_at)}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def render_status_page(view: NodeView, limit: int = 50) -> str:
    """The status page as an HTML document."""
    healthy, checks = check_health(view, write_probe=False)  # never waits for the write lock
    health_rows = "".join(
        f'<tr><td>{_text(name)}</td><td class="{"ok" if c["ok"] else "bad"}">'
        f"{'ok' if c['ok'] else 'failing'}</td><td>{_text(c['detail'])}</td></tr>"
        for name, c in checks.items()
    )
    counts = count_by_state(view.read_factory)
    count_cells = "".join(f"<th>{_text(state)}</th>" for state in counts)
    count_values = "".join(f'<td class="num">{n}</td>' for n in counts.values())
    rows = list_studies(view.read_factory, limit=limit)
    study_rows = "".join(_study_row(row) for row in rows) or (
        '<tr><td colspan="12">No studies yet.</td></tr>'
    )
    node = view.settings.node
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="15">
<title>Breast AI Node {escape(node.ae_title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Breast AI Node <span class="uid">{escape(node.ae_title)}</span></h1>
<p class="note">Not for clinical use. Version {escape(__version__)}.</p>
<h2>Health: <span class="{"ok" if healthy else "bad"}">{"ok" if healthy else "failing"}</span></h2>
<table><tr><th>check</th><th>state</th><th>detail</th></tr>{health_rows}</table>
<h2>Studies by state</h2>
<table><tr>{count_cells}</tr><tr>{count_values}</tr></table>
<h2>Latest studies</h2>
<table id="studies">
<tr><th>accession</th><th>Study Instance UID</th><th>state</th><th>gen</th><th>instances</th>
<th>score</th><th>assessment</th><th>queue wait (s)</th><th>inference (s)</th>
<th>deliveries</th><th>received (UTC)</th><th>changed (UTC)</th></tr>
{study_rows}
</table>
</body>
</html>
"""
