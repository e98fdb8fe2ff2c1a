"""The package layout holds what it promises: result objects without the model runtime,
and one owner of study and delivery state."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

NODE = Path(__file__).resolve().parents[2] / "node"


def _imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(done.stdout.split())


def test_building_result_objects_does_not_import_the_model_runtime() -> None:
    modules = _imported_after("node.outputs")
    assert "node.outputs.sr" in modules and "node.results" in modules
    assert not {m for m in modules if m.split(".")[0] in ("torch", "timm", "torchvision")}
    assert not {m for m in modules if m.startswith(("node.inference", "node.pipeline"))}


def test_the_results_page_and_metrics_do_not_import_the_model_runtime() -> None:
    modules = _imported_after("node.http")
    assert not {m for m in modules if m.split(".")[0] in ("torch", "timm")}


def _state_writes(path: Path) -> list[str]:
    """``update(Study)``/``update(Delivery)``/``delete(Study)`` calls in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("update", "delete")
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in ("Study", "Delivery")
        ):
            found.append(f"{path.relative_to(NODE.parent)}:{node.lineno}")
    return found


def test_only_the_queue_changes_study_and_delivery_rows() -> None:
    queue = NODE / "db" / "queue"
    inside = [w for p in sorted(queue.rglob("*.py")) for w in _state_writes(p)]
    outside = [
        w for p in sorted(NODE.rglob("*.py")) if queue not in p.parents for w in _state_writes(p)
    ]
    assert inside, "the scan finds the queue's own transitions"
    assert outside == []
