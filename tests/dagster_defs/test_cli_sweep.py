"""`takeflow run GRAPH --sweep FILE` runs the batch with one progress line and lists every take."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.cli import main
from tests.conftest import FIXTURES


@pytest.mark.timeout(120)
def test_run_with_sweep_prints_batch_progress_and_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path / "film"), "--id", "film"]) == 0
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"runs": 1, "values": {"grain.seed": [1, 2], "title.text": ["A"]}}))
    graph = FIXTURES / "graphs" / "poster.json"
    capsys.readouterr()
    code = main(["run", str(graph), "--project", "film", "--sweep", str(sweep), "--timeout", "90"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "batch 2/2 done (100%), 0 failed" in err
    assert "2 completed, 0 failed, 0 cancelled of 2" in out
    lines = [line for line in out.splitlines() if "take_" in line]
    assert len(lines) == 2
    assert "grain.seed=1, title.text='A'" in lines[0] and "grain.seed=2" in lines[1]
    assert all(Path(line.rsplit(": ", 1)[1]).is_file() for line in lines)


def test_run_with_a_bad_sweep_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep.json"
    sweep.write_text(
        json.dumps(
            {
                "groups": [
                    [
                        {"input": "grain.seed", "values": [1, 2]},
                        {"input": "title.text", "values": ["A"]},
                    ]
                ]
            }
        )
    )
    code = main(["run", str(FIXTURES / "graphs" / "poster.json"), "--sweep", str(sweep)])
    assert code == 2
    assert "grain.seed has 2, title.text has 1" in capsys.readouterr().err
