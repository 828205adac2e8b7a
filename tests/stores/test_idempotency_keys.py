"""The idempotency key table beside the SQLite task state: per user, expiring, durable."""

from __future__ import annotations

import time
from pathlib import Path

from stores.idempotency import SqliteIdempotencyKeys, open_keys
from stores.sqlite_state import SqliteState


def test_keys_are_per_user_durable_and_expire(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "state.db")
    keys = open_keys(state, ttl_s=0.3)
    assert isinstance(keys, SqliteIdempotencyKeys)
    keys.put("ana", "k", "hash-1", "task_a")
    assert keys.find("ana", "k") == ("hash-1", "task_a")
    assert keys.find("bob", "k") is None
    keys.close()
    again = SqliteIdempotencyKeys(tmp_path / "state.db", ttl_s=0.3)  # a restart
    assert again.find("ana", "k") == ("hash-1", "task_a")
    time.sleep(0.35)
    assert again.find("ana", "k") is None  # expired: the key may be used anew
    again.put("ana", "k", "hash-2", "task_b")
    assert again.find("ana", "k") == ("hash-2", "task_b")
    again.forget("ana", "k")  # its submit failed
    assert again.find("ana", "k") is None
    again.close()
    state.close()


def test_postgres_keys_expire_and_roll_back_with_their_transaction(pg_url: str) -> None:
    from stores.postgres.idempotency import PostgresIdempotencyKeys
    from stores.postgres.state import PostgresState

    state = PostgresState(pg_url, pool_size=2)
    try:
        keys = open_keys(state, ttl_s=0.3)
        assert isinstance(keys, PostgresIdempotencyKeys)
        try:
            with state.transaction():
                keys.put("ana", "rolled", "h", "task_x")
                raise RuntimeError("the submit failed")
        except RuntimeError:
            pass
        assert keys.find("ana", "rolled") is None  # a key commits with its task, or not at all
        keys.put("ana", "k", "hash-1", "task_a")
        assert keys.find("ana", "k") == ("hash-1", "task_a") and keys.find("bob", "k") is None
        time.sleep(0.35)
        assert keys.find("ana", "k") is None
        keys.put("ana", "k", "hash-2", "task_b")
        assert keys.find("ana", "k") == ("hash-2", "task_b")
        keys.forget("ana", "k")
        assert keys.find("ana", "k") is None
    finally:
        state.close()
