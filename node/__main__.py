"""``python -m node``: the ``breast-node`` command, for environments without its script."""

from node.cli import main

raise SystemExit(main())
