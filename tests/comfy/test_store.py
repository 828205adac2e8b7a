"""One contract for the ComfyUI prompt store, run against both deployments' tables: SQLite
(embedded) and PostgreSQL (distributed, shared by every API replica)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.comfy.store import ComfyStore
from server.comfy.translate import OutputPlan, Translation
from stores.comfy_prompts import SqlitePromptTables

PLAN = Translation(
    graph={"name": "g", "nodes": []},
    owners={"ksampler_3": "3"},
    samplers={"3": ["ksampler_3"]},
    outputs=[OutputPlan("9", "SaveImage", [("decode_8", "image")], "ComfyUI")],
    order=["4", "3", "8", "9"],
    deps={"3": ["4"], "8": ["3"], "9": ["8"]},
    classes={"3": "KSampler", "9": "SaveImage"},
    ports={},
)
# key order a client chose (not sorted): /queue gives the prompt back as it came
PROMPT = {"9": {"class_type": "SaveImage"}, "10": {"class_type": "LoadImage"}, "3": {}}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ComfyStore]:
    if request.param == "sqlite":
        tables = ComfyStore(SqlitePromptTables(tmp_path / "comfyui.sqlite"))
        yield tables
        tables.close()
    else:
        from stores.postgres.comfy import PostgresComfyStore
        from stores.postgres.state import PostgresState

        state = PostgresState(request.getfixturevalue("pg_url"))
        PostgresComfyStore(state)  # a second start finds the tables (idempotent)
        yield ComfyStore(PostgresComfyStore(state))
        state.close()


def add(store: ComfyStore, n: int, client: str | None = "c1", user: str = "ana") -> str:
    prompt_id = f"p{n}"
    body = {"prompt": PROMPT, "extra_data": {"client_id": client}, "outputs": ["9"]}
    store.add(prompt_id, f"t{n}", store.next_number(), client, user, "proj", body, PLAN)
    return prompt_id


def test_rows_read_back_as_stored_and_numbers_count_up(store: ComfyStore) -> None:
    first, second = add(store, 1), add(store, 2)
    row = store.get(first)
    assert row is not None and store.by_task("t2") == store.get(second)
    assert (row.task_id, row.client_id, row.user, row.project) == ("t1", "c1", "ana", "proj")
    assert list(row.prompt) == ["9", "10", "3"] and row.outputs == ["9"]
    assert row.plan == PLAN and row.history is None
    assert row.queue_item()[0] == 1 and store.get(second).queue_item()[0] == 2  # type: ignore[union-attr]
    assert store.exists(first) and not store.exists("nope") and store.by_task("t9") is None
    store.remove(first)
    assert store.get(first) is None
    assert [r.prompt_id for r in store.without_history()] == [second]


def test_the_history_is_claimed_by_one_writer_and_written_once(store: ComfyStore) -> None:
    prompt_id = add(store, 1)
    assert store.claim_history(prompt_id, "replica-a", 60)
    assert not store.claim_history(prompt_id, "replica-b", 60)  # A writes it
    assert store.claim_history(prompt_id, "replica-a", 60)  # A's own claim, again
    store.release_history(prompt_id, "replica-b")  # not B's to release
    assert not store.claim_history(prompt_id, "replica-b", 60)
    store.release_history(prompt_id, "replica-a")  # A failed: B may write it
    assert store.claim_history(prompt_id, "replica-b", 0.0)
    time.sleep(0.01)
    assert store.claim_history(prompt_id, "replica-a", 60)  # B's lease (0 s) ran out
    store.set_history(prompt_id, {"outputs": {"9": {"images": []}}, "status": "a"})
    store.set_history(prompt_id, {"status": "b"})  # written once: a second write is ignored
    row = store.get(prompt_id)
    assert row is not None and row.history == {"outputs": {"9": {"images": []}}, "status": "a"}
    assert not store.claim_history(prompt_id, "replica-b", 60)
    assert store.without_history() == []


def test_history_lists_hides_and_filters_by_user(store: ComfyStore) -> None:
    ids = [add(store, n, user="ana" if n % 2 else "bo") for n in range(1, 6)]
    for prompt_id in ids[:4]:
        store.set_history(prompt_id, {"status": prompt_id})
    assert [r.prompt_id for r in store.history()] == ids[:4]
    assert [r.prompt_id for r in store.history(2, 1)] == ids[1:3]
    assert [r.prompt_id for r in store.history(-1)] == ids[:4]  # no limit, as SQLite's -1
    assert [r.prompt_id for r in store.history(user="bo")] == [ids[1], ids[3]]
    store.hide_history([ids[0], ids[1]], user="bo")  # only bo's of those
    assert [r.prompt_id for r in store.history()] == [ids[0], *ids[2:4]]
    store.hide_history(None)
    assert store.history() == []


def test_positions_move_forward_and_done_prompts_leave_the_replay(store: ComfyStore) -> None:
    first, second = add(store, 1), add(store, 2)
    add(store, 3, client="c2")
    assert [r.prompt_id for r in store.client_prompts("c1", 50)] == [first, second]
    assert [r.prompt_id for r in store.client_prompts("c1", 1)] == [second]
    store.save_positions("c1", {first: (7, True), second: (3, False)})
    store.save_positions("c1", {second: (2, False)})  # a replica that sent less saves late
    assert store.positions("c1") == {first: (7, True), second: (3, False)}
    assert [r.prompt_id for r in store.client_prompts("c1", 50)] == [second]
    assert store.positions("c2") == {}


def test_a_client_id_belongs_to_the_first_user(store: ComfyStore) -> None:
    assert store.claim_client("c1", "ana") == "ana"
    assert store.claim_client("c1", "bo") == "ana"
    assert store.claim_client("c2", "bo") == "bo"
