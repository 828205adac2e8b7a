"""``python -m server.cli``: the same as the ``takeflow`` command."""

from __future__ import annotations

from server.cli import main

raise SystemExit(main())
