"""Partial runs as ComfyUI has them: ``partial_execution_targets`` runs only what the named
outputs need, and a prompt whose outputs are partly invalid runs the valid ones and answers
``node_errors`` for the others."""

from __future__ import annotations

import copy
from typing import Any

from tests.comfy.client import ComfyClient, of_prompt, txt2img, until_done
from tests.server.harness import ServerProcess


def two_outputs(seed: int) -> dict[str, Any]:
    """Two chains on one checkpoint: KSampler 3 -> SaveImage 9, KSampler 13 -> SaveImage 19."""
    prompt = txt2img(seed=seed)
    prompt["13"] = copy.deepcopy(prompt["3"])
    prompt["13"]["inputs"]["seed"] = seed + 1
    prompt["18"] = {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["4", 2]}}
    prompt["19"] = {"class_type": "SaveImage",
                    "inputs": {"images": ["18", 0], "filename_prefix": "second"}}  # fmt: skip
    return prompt


def _run(client: ComfyClient, client_id: str, prompt: dict[str, Any],
         **fields: Any) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:  # fmt: skip
    ws = client.connect(client_id)
    try:
        answer = client.queue_prompt(prompt, client_id, **fields)
        messages = of_prompt(until_done(ws, answer["prompt_id"]), answer["prompt_id"])
    finally:
        ws.close()
    status, history = client.get(f"/history/{answer['prompt_id']}")
    assert status == 200
    return answer, messages, history[answer["prompt_id"]]


def _executing(messages: list[Any]) -> set[str]:
    return {
        m["data"]["node"]
        for m in messages
        if isinstance(m, dict) and m["type"] == "executing" and m["data"]["node"] is not None
    }


def test_partial_execution_targets_run_only_the_targets_ancestors(
    comfy: tuple[ServerProcess, ComfyClient],
) -> None:
    _, client = comfy
    answer, messages, entry = _run(client, "partial", two_outputs(31),
                                   partial_execution_targets=["19"])  # fmt: skip
    assert answer["node_errors"] == {}
    assert set(entry["outputs"]) == {"19"}
    ran = _executing(messages)
    assert {"13", "18", "19"} <= ran and not ran & {"3", "8", "9"}
    assert entry["status"]["status_str"] == "success"
    status, refused = client.post("/prompt", {"prompt": two_outputs(31),
                                              "partial_execution_targets": ["8"]})  # fmt: skip
    assert status == 400 and refused["error"]["type"] == "prompt_no_outputs"


def test_a_partly_invalid_prompt_runs_its_valid_output(
    comfy: tuple[ServerProcess, ComfyClient],
) -> None:
    _, client = comfy
    prompt = two_outputs(41)
    prompt["13"]["inputs"]["steps"] = 0  # Takeflow's range check: steps >= 1
    answer, messages, entry = _run(client, "partly", prompt)
    assert set(answer["node_errors"]) == {"13"}
    error = answer["node_errors"]["13"]
    assert error["dependent_outputs"] == ["19"] and error["class_type"] == "KSampler"
    assert error["errors"][0]["type"] == "value_smaller_than_min"
    assert set(entry["outputs"]) == {"9"} and entry["status"]["status_str"] == "success"
    assert not _executing(messages) & {"13", "18", "19"}
    # an error found before translation (a link to no node) drops its output the same way
    prompt = two_outputs(43)
    prompt["19"]["inputs"]["images"] = ["404", 0]
    answer, _, entry = _run(client, "partly2", prompt)
    assert answer["node_errors"]["19"]["errors"][0]["type"] == "bad_linked_input"
    assert set(entry["outputs"]) == {"9"}
    # with no valid output left, the prompt is refused whole, as before
    prompt["3"]["inputs"]["steps"] = 0
    status, refused = client.post("/prompt", {"prompt": prompt})
    assert status == 400 and set(refused["node_errors"]) == {"3", "19"}
