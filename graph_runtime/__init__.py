"""Takeflow's pure core: canvas model, templates, validation, planning, events and takes logic.

Nothing here imports dagster, litestar, git, torch or diffusers; side effects sit behind the
interfaces defined in this package and are implemented in ``stores/``.
"""
