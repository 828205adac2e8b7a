"""The CLI package: one serve options model for both entry points; a failed task keeps its code."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from server.app import main as app_main
from server.cli import build_parser, main
from server.config import DEFAULT_PORT, ServeOptions, ServerConfig, add_serve_options

SERVE_ARGS = [
    "--host",
    "127.0.0.2",
    "--port",
    "9001",
    "--workers",
    "3",
    "--demo",
    "--max-upload-bytes",
    "1000",
    "--heartbeat",
    "2.5",
    "--ws-queue-size",
    "7",
    "--max-body-bytes",
    "2000",
    "--max-graph-nodes",
    "9",
    "--plugin",
    "some.module",
    "--template-fault-window",
    "4",
    "--ws-compression",
]


def test_cli_serve_and_server_app_parse_the_same_options_into_one_model() -> None:
    from_cli = ServeOptions.from_args(build_parser().parse_args(["serve", *SERVE_ARGS]))
    app_parser = argparse.ArgumentParser()
    app_parser.add_argument("--home")
    add_serve_options(app_parser)
    from_app = ServeOptions.from_args(app_parser.parse_args(SERVE_ARGS))
    assert from_cli == from_app
    assert from_cli.workers == 3 and from_cli.demo
    assert from_cli.config == ServerConfig(
        host="127.0.0.2",
        port=9001,
        max_upload_bytes=1000,
        heartbeat_s=2.5,
        ws_queue_size=7,
        max_body_bytes=2000,
        max_graph_nodes=9,
        plugins=("some.module",),
        template_fault_window_s=4.0,
        ws_compression=True,
    )


def test_serve_defaults_are_the_config_defaults() -> None:
    options = ServeOptions.from_args(build_parser().parse_args(["serve"]))
    assert options.config == ServerConfig()
    assert options.config.port == DEFAULT_PORT
    assert options == ServeOptions()


def test_server_app_rejects_what_the_cli_rejects(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        app_main(["--heartbeat", "soon"])
    assert "--heartbeat" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_a_failed_task_prints_its_stable_error_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = tmp_path / "fails.json"
    node = {
        "id": "boom",
        "template": "fail",
        "inputs": {"message": {"kind": "literal", "value": "on purpose"}},
    }
    graph.write_text(json.dumps({"format": "takeflow.graph/v1", "name": "f", "nodes": [node]}))
    code = main(["--home", str(tmp_path / "home"), "run", str(graph), "--timeout", "90"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: [template_failed]" in err
    assert "node 'boom' (template 'fail') failed: RuntimeError: on purpose" in err
