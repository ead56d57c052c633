"""A DDL waiting for its lock must not hold the application's queries queued behind it for the
whole lock_timeout: it waits in slices and leaves the queue between them."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from villager_shop.migration.ddl import Ddl, LockRetriesExhausted, RetryPolicy, execute


def test_waiting_ddl_holds_queued_queries_one_slice_at_most(legacy_db: str) -> None:
    holder = psycopg.connect(legacy_db)
    holder.execute("LOCK TABLE users IN ROW EXCLUSIVE MODE")  # an open write transaction
    worst: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        with psycopg.connect(legacy_db, autocommit=True) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                c.execute("SELECT count(*) FROM users")
                worst.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.005)

    ddl_conn = psycopg.connect(legacy_db, autocommit=True)
    result: list[int] = []
    policy = RetryPolicy(lock_timeout_ms=1000, lock_slice_ms=50, max_attempts=20, base_delay_s=0.05, max_delay_s=0.2)
    t = threading.Thread(target=lambda: result.append(execute(
        ddl_conn, Ddl("ALTER TABLE users ADD COLUMN IF NOT EXISTS probe integer", "ACCESS EXCLUSIVE on users"),
        policy)))
    r = threading.Thread(target=reader)
    r.start()
    t.start()
    time.sleep(1.5)
    holder.commit()  # the application transaction ends: the DDL gets through
    t.join(timeout=30)
    stop.set()
    r.join()
    holder.close()
    ddl_conn.close()
    assert result and result[0] >= 1
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'"
                         " AND column_name = 'probe'").fetchone() == (1,)
    # Without slices a reader would wait the whole lock_timeout (1000 ms) behind the DDL.
    assert max(worst) < 500, max(worst)


def test_a_ddl_that_gives_up_names_the_transaction_in_its_way(legacy_db: str) -> None:
    holder = psycopg.connect(legacy_db)
    holder.execute("SELECT count(*) FROM users")  # idle in transaction, holding ACCESS SHARE
    pid = holder.info.backend_pid
    time.sleep(1.1)  # older than a second: a transaction in the way, not a passing query
    ddl_conn = psycopg.connect(legacy_db, autocommit=True)
    policy = RetryPolicy(lock_timeout_ms=50, lock_slice_ms=50, max_attempts=2, base_delay_s=0.01, max_delay_s=0.01)
    try:
        with pytest.raises(LockRetriesExhausted) as info:
            execute(ddl_conn, Ddl("ALTER TABLE users ADD COLUMN probe integer", "ACCESS EXCLUSIVE on users"), policy)
        assert f"pid {pid} (idle in transaction" in str(info.value) and "users" in str(info.value), str(info.value)
        assert info.value.exit_code == 4  # gave up rather than go on unsafely
    finally:
        holder.close()
        ddl_conn.close()
