"""Canvas editor <-> runtime: editor document format, node state, per-node errors."""
