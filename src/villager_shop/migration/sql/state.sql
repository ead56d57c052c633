-- The migration's own state lives in the database, so any machine can resume or inspect it.
-- name: state
CREATE SCHEMA IF NOT EXISTS villager_migration;

CREATE TABLE IF NOT EXISTS villager_migration.steps (
    name        text PRIMARY KEY,
    position    bigint NOT NULL,
    status      text NOT NULL DEFAULT 'pending',   -- pending | running | done | failed | undone
    attempts    bigint NOT NULL DEFAULT 0,
    started_at  timestamptz,
    finished_at timestamptz,
    last_error  text,
    detail      jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS villager_migration.backfill (
    step        text PRIMARY KEY,
    table_name  text NOT NULL,
    last_id     uuid,                               -- every row with id <= last_id is done
    rows_done   bigint NOT NULL DEFAULT 0,
    rows_total  bigint,
    batches     bigint NOT NULL DEFAULT 0,
    batch_size  bigint,
    elapsed_s   double precision NOT NULL DEFAULT 0,
    max_batch_ms double precision NOT NULL DEFAULT 0,
    started_at  timestamptz,
    updated_at  timestamptz,
    finished_at timestamptz
);
-- The physical walk (PostgreSQL 14+): a part covers heap pages [page_from, page_to) of the
-- relation file `filenode`; every page below next_page is done.
ALTER TABLE villager_migration.backfill ADD COLUMN IF NOT EXISTS walk text NOT NULL DEFAULT 'key';
ALTER TABLE villager_migration.backfill ADD COLUMN IF NOT EXISTS page_from bigint;
ALTER TABLE villager_migration.backfill ADD COLUMN IF NOT EXISTS page_to bigint;
ALTER TABLE villager_migration.backfill ADD COLUMN IF NOT EXISTS next_page bigint;
ALTER TABLE villager_migration.backfill ADD COLUMN IF NOT EXISTS filenode oid;
-- The first transaction id that is not older than the walk (row versions from it on are complete).
ALTER TABLE villager_migration.backfill ADD COLUMN IF NOT EXISTS xid_from bigint;
-- The key walk over any single-column primary key: the cursor as text, cast back with the key's
-- type (every row with key <= last_key is done; last_id is read only from rows of older
-- versions), and a part's key range (key_lo excluded, key_hi included; NULL: unbounded), recorded
-- for keys other than uuid, whose split depends on the table's keys.
ALTER TABLE villager_migration.backfill ADD COLUMN IF NOT EXISTS last_key text;
ALTER TABLE villager_migration.backfill ADD COLUMN IF NOT EXISTS key_lo text;
ALTER TABLE villager_migration.backfill ADD COLUMN IF NOT EXISTS key_hi text;

-- Rows the backfill skipped because the application held their lock; retried at the end. The
-- key is kept as text (any key type); a table made by an older version has uuid.
CREATE TABLE IF NOT EXISTS villager_migration.backfill_retry (
    step   text NOT NULL,
    row_id text NOT NULL,
    PRIMARY KEY (step, row_id)
);
DO $$
BEGIN
    IF (SELECT atttypid FROM pg_attribute WHERE attrelid = 'villager_migration.backfill_retry'::regclass
          AND attname = 'row_id') = 'uuid'::regtype THEN
        ALTER TABLE villager_migration.backfill_retry ALTER COLUMN row_id TYPE text USING row_id::text;
    END IF;
END
$$;

-- One row per legacy row that cannot be migrated as is (kept untouched, with the reason).
CREATE TABLE IF NOT EXISTS villager_migration.quarantine (
    table_name     text NOT NULL,
    row_id         uuid NOT NULL,
    reason         text NOT NULL,
    detail         jsonb,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, row_id)
);

CREATE TABLE IF NOT EXISTS villager_migration.state (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS villager_migration.events (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    step    text,
    kind    text NOT NULL,
    message text NOT NULL,
    data    jsonb
);

-- Bumped (non-transactionally, without contention) by every write that arrives through the
-- legacy columns, so `complete` can tell whether an old application is still writing.
CREATE SEQUENCE IF NOT EXISTS villager_migration.legacy_writes;
