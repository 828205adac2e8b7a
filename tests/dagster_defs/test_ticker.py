"""The ticker's parts that need no daemon: the home's ticker lock (one daemon per home, shared
with `takeflow ui`) and the scan of saved schedules that decides whether a daemon runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dagster_defs.ticker import FileTickerLock, scan_schedules


def test_one_holder_of_the_file_lock_and_the_others_can_say_who(tmp_path: Path) -> None:
    serve = FileTickerLock(tmp_path / "ticker.lock", "serve host:1")
    ui = FileTickerLock(tmp_path / "ticker.lock", "ui host:2")
    assert serve.acquire() and serve.held()
    assert not ui.acquire() and not ui.held()
    assert ui.holder() == "serve host:1"
    serve.release()
    assert ui.acquire() and ui.holder() == "ui host:2"
    assert not serve.acquire()
    ui.release()


def _sidecar(folder: Path, name: str, *enabled: bool) -> Path:
    schedules = [
        {"name": f"s{i}", "cron": "0 2 * * *", "enabled": on} for i, on in enumerate(enabled)
    ]
    path = folder / f"{name}.schedules.json"
    path.write_text(json.dumps({"format": "takeflow.schedules/v1", "schedules": schedules}))
    return path


def test_scan_counts_enabled_schedules_of_saved_canvases_and_notices_changes(
    tmp_path: Path,
) -> None:
    source = tmp_path / "p" / "02_Source_Creative"
    (source / "canvases").mkdir(parents=True)
    assert scan_schedules([tmp_path / "p"]).enabled == 0
    (source / "poster.json").write_text("{}")
    (source / "canvases" / "dream.takeflow.json").write_text("{}")
    _sidecar(source, "poster", True, False)
    sidecar = _sidecar(source / "canvases", "dream", True)
    _sidecar(source, "orphan", True)  # no canvas beside it: no job, nothing to tick
    first = scan_schedules([tmp_path / "p"])
    assert first.enabled == 2
    _sidecar(source / "canvases", "dream", False)
    os.utime(sidecar, ns=(1, 1))
    second = scan_schedules([tmp_path / "p"])
    assert second.enabled == 1 and second.fingerprint != first.fingerprint


def test_takeflow_ui_starts_no_daemon_while_serve_ticks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dagster_defs.ui_launcher import _daemon_lock
    from stores.home import TakeflowHome

    home = TakeflowHome.resolve(tmp_path / "home")
    serve = FileTickerLock(home.dagster_home / "ticker.lock", "serve host:1")
    assert serve.acquire()
    assert _daemon_lock(home) is None
    assert "schedules are ticked by serve host:1" in capsys.readouterr().out
    serve.release()
    lock = _daemon_lock(home)
    assert lock is not None and (lock.holder() or "").startswith("ui ")
    lock.release()
