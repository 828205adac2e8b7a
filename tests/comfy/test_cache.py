"""ComfyUI's execution cache, answered by Takeflow's node cache: a prompt run again lists every
node in ``execution_cached`` before anything runs and gets no ``executing`` for them, its cached
output nodes get their ``executed`` with the images, and the same subgraph under other node ids
in another prompt hits."""

from __future__ import annotations

from typing import Any

from tests.comfy.client import ComfyClient, of_prompt, txt2img, until_done
from tests.server.harness import ServerProcess

EVERY = {"3", "4", "5", "6", "7", "8", "9"}  # txt2img's nodes


def _run(client: ComfyClient, client_id: str,
         prompt: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:  # fmt: skip
    ws = client.connect(client_id)
    try:
        prompt_id = client.queue_prompt(prompt, client_id)["prompt_id"]
        messages = [m for m in of_prompt(until_done(ws, prompt_id), prompt_id)
                    if isinstance(m, dict)]  # fmt: skip
    finally:
        ws.close()
    status, history = client.get(f"/history/{prompt_id}")
    assert status == 200
    return messages, history[prompt_id]


def _of(messages: list[Any], kind: str) -> list[dict[str, Any]]:
    return [m["data"] for m in messages if m["type"] == kind]


def renumbered(prompt: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The same graph with other node ids."""

    def link(value: Any) -> Any:
        return [prefix + value[0], value[1]] if isinstance(value, list) else value

    return {prefix + nid: {**node, "inputs": {k: link(v) for k, v in node["inputs"].items()}}
            for nid, node in prompt.items()}  # fmt: skip


def test_a_prompt_run_again_is_answered_from_the_cache(
    comfy: tuple[ServerProcess, ComfyClient],
) -> None:
    _, client = comfy
    first, entry = _run(client, "cache-a", txt2img(seed=77))
    assert _of(first, "execution_cached")[0]["nodes"] == []
    images = entry["outputs"]["9"]["images"]

    again, again_entry = _run(client, "cache-a", txt2img(seed=77))
    cached = _of(again, "execution_cached")
    assert len(cached) == 1 and set(cached[0]["nodes"]) == EVERY
    kinds = [m["type"] for m in again if m["type"] != "progress_state"]
    assert kinds.index("execution_cached") < kinds.index("executed")
    assert [d["node"] for d in _of(again, "executing")] == [None]  # only the closing one
    assert not _of(again, "progress")
    executed = _of(again, "executed")
    assert [d["node"] for d in executed] == ["9"]
    assert len(executed[0]["output"]["images"]) == len(images) == 1
    assert again_entry["outputs"]["9"]["images"] == executed[0]["output"]["images"]
    status, _ = client.get_bytes("/view?" + "&".join(
        f"{k}={v}" for k, v in again_entry["outputs"]["9"]["images"][0].items()))  # fmt: skip
    assert status == 200
    messages = again_entry["status"]["messages"]
    assert set(next(m for k, m in messages if k == "execution_cached")["nodes"]) == EVERY

    # the same subgraph under other node ids, in another prompt, hits too
    other, _ = _run(client, "cache-b", renumbered(txt2img(seed=77), "n"))
    assert set(_of(other, "execution_cached")[0]["nodes"]) == {"n" + nid for nid in EVERY}

    # a changed sampler runs again, and so does everything it takes part in
    changed, _ = _run(client, "cache-c", txt2img(seed=78))
    assert _of(changed, "execution_cached")[0]["nodes"] == []
    assert "3" in {d["node"] for d in _of(changed, "executing")}
