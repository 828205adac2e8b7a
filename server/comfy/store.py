"""What the ComfyUI layer keeps beside Takeflow's own task records and event log.

Per prompt: its id, task id, number, client and the ComfyUI prompt with its translation (to
speak ComfyUI about the task), the history entry once written (output file names) and who is
writing it; per client the position up to which each prompt's messages were delivered (so a
reconnecting client gets exactly what it missed, across restarts and replicas too), and with
auth on the user each ``clientId`` belongs to (the first to connect with it).

Two stores of the same tables (``PromptTables``): embedded, ``<home>/comfyui/comfyui.sqlite``
(``stores.comfy_prompts.SqlitePromptTables``); distributed, PostgreSQL shared by every API replica
(``stores.postgres.comfy.PostgresComfyStore``). ``ComfyStore`` turns their rows into
``PromptRow`` for the rest of the layer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from server.comfy.translate import Translation
from stores.comfy_prompts import Row, SqlitePromptTables
from stores.sqlite_state import SqliteState


def open_tables(state: object, path: Path) -> PromptTables:
    """The prompt store of a runtime's deployment, by its task state: SQLite at ``path``
    beside a SQLite state (embedded), the state's PostgreSQL pool (distributed)."""
    if isinstance(state, SqliteState):
        return SqlitePromptTables(path)
    from stores.postgres.comfy import PostgresComfyStore  # psycopg: distributed mode only
    from stores.postgres.state import PostgresState

    assert isinstance(state, PostgresState), type(state)
    return PostgresComfyStore(state)


class PromptTables(Protocol):
    """The ComfyUI layer's tables, one implementation per deployment; every method is safe
    from any thread."""

    closed: bool

    def close(self) -> None: ...

    def next_number(self) -> int: ...

    def add(self, row: Row) -> None: ...

    def remove(self, prompt_id: str) -> None: ...

    def exists(self, prompt_id: str) -> bool: ...

    def get(self, prompt_id: str) -> Row | None: ...

    def by_task(self, task_id: str) -> Row | None: ...

    def without_history(self) -> list[Row]: ...

    def history(self, max_items: int | None, offset: int, user: str | None) -> list[Row]: ...

    def hide_history(self, prompt_ids: list[str] | None, user: str | None) -> None: ...

    def claim_history(self, prompt_id: str, owner: str, lease_s: float) -> bool: ...

    def set_history(self, prompt_id: str, history: str) -> None: ...

    def release_history(self, prompt_id: str, owner: str) -> None: ...

    def claim_client(self, client_id: str, user: str) -> str: ...

    def positions(self, client_id: str) -> dict[str, tuple[int, bool]]: ...

    def save_positions(self, client_id: str, positions: dict[str, tuple[int, bool]]) -> None: ...

    def client_prompts(self, client_id: str, limit: int) -> list[Row]: ...


@dataclass(frozen=True)
class PromptRow:
    """One ComfyUI prompt and the Takeflow task that runs it."""

    prompt_id: str
    task_id: str
    number: float
    client_id: str | None
    user: str
    project: str | None
    created: float
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    plan: Translation
    history: dict[str, Any] | None

    def queue_item(self) -> list[Any]:
        """ComfyUI's queue entry: ``[number, prompt_id, prompt, extra_data, outputs]``."""
        number: float | int = int(self.number) if float(self.number).is_integer() else self.number
        return [number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @staticmethod
    def of(raw: Row) -> PromptRow:
        body = json.loads(raw[7])
        return PromptRow(
            prompt_id=raw[0],
            task_id=raw[1],
            number=raw[2],
            client_id=raw[3],
            user=raw[4],
            project=raw[5],
            created=raw[6],
            prompt=body["prompt"],
            extra_data=body.get("extra_data", {}),
            outputs=body.get("outputs", []),
            plan=Translation.from_json(json.loads(raw[8])),
            history=json.loads(raw[9]) if raw[9] else None,
        )


class ComfyStore:
    """Prompt rows as ``PromptRow`` over either deployment's tables."""

    def __init__(self, tables: PromptTables) -> None:
        self.tables = tables

    @property
    def closed(self) -> bool:
        return self.tables.closed

    def close(self) -> None:
        self.tables.close()

    # -- prompts ----------------------------------------------------------------------------

    def next_number(self) -> int:
        return self.tables.next_number()

    def add(
        self,
        prompt_id: str,
        task_id: str,
        number: float,
        client_id: str | None,
        user: str,
        project: str | None,
        body: dict[str, Any],
        plan: Translation,
    ) -> None:
        self.tables.add((prompt_id, task_id, number, client_id, user, project, time.time(),
                         json.dumps(body), json.dumps(plan.to_json()), None))  # fmt: skip

    def remove(self, prompt_id: str) -> None:
        self.tables.remove(prompt_id)

    def exists(self, prompt_id: str) -> bool:
        return self.tables.exists(prompt_id)

    def get(self, prompt_id: str) -> PromptRow | None:
        raw = self.tables.get(prompt_id)
        return PromptRow.of(raw) if raw is not None else None

    def by_task(self, task_id: str) -> PromptRow | None:
        raw = self.tables.by_task(task_id)
        return PromptRow.of(raw) if raw is not None else None

    def without_history(self) -> list[PromptRow]:
        """Prompts whose history is not written yet (queued, running, or just ended)."""
        return [PromptRow.of(r) for r in self.tables.without_history()]

    def history(
        self, max_items: int | None = None, offset: int = 0, user: str | None = None
    ) -> list[PromptRow]:
        """Prompts with a history entry (``user``'s only when given), oldest first (``offset``
        skips the oldest); a negative ``max_items`` is no limit."""
        limit = None if max_items is None or max_items < 0 else max_items
        return [PromptRow.of(r) for r in self.tables.history(limit, offset, user)]

    def hide_history(self, prompt_ids: list[str] | None, user: str | None = None) -> None:
        """``POST /history``: hide entries (all when ``None``), only ``user``'s when given;
        tasks and takes stay."""
        self.tables.hide_history(prompt_ids, user)

    def claim_history(self, prompt_id: str, owner: str, lease_s: float) -> bool:
        """The right to write a prompt's history (once across processes): free, ``owner``'s,
        or its holder's lease of ``lease_s`` expired; false once written."""
        return self.tables.claim_history(prompt_id, owner, lease_s)

    def set_history(self, prompt_id: str, history: dict[str, Any]) -> None:
        self.tables.set_history(prompt_id, json.dumps(history))

    def release_history(self, prompt_id: str, owner: str) -> None:
        self.tables.release_history(prompt_id, owner)

    # -- clients ----------------------------------------------------------------------------

    def claim_client(self, client_id: str, user: str) -> str:
        """Tie ``client_id`` to ``user`` unless it is tied already; the user it belongs to."""
        return self.tables.claim_client(client_id, user)

    def positions(self, client_id: str) -> dict[str, tuple[int, bool]]:
        return self.tables.positions(client_id)

    def save_positions(self, client_id: str, positions: dict[str, tuple[int, bool]]) -> None:
        self.tables.save_positions(client_id, positions)

    def client_prompts(self, client_id: str, limit: int) -> list[PromptRow]:
        """The client's most recent prompts whose messages it has not all received."""
        return [PromptRow.of(r) for r in self.tables.client_prompts(client_id, limit)]
