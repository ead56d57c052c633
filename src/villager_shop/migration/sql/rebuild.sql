-- Rebuild a table by copy instead of updating every row in place (steps/rebuild.py): while the
-- copy runs, every change to the live table is logged by row id; the log is replayed onto the
-- copy, and one short transaction replays the rest and swaps the copy in.

-- name: log_table
CREATE TABLE IF NOT EXISTS villager_migration.rebuild_log (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text NOT NULL,
    row_id     text                                  -- the row's key as text; NULL: the table was truncated
);
-- A log made by an earlier version held uuid keys: the trigger below writes text.
DO $do$
BEGIN
    IF (SELECT atttypid FROM pg_attribute WHERE attrelid = 'villager_migration.rebuild_log'::regclass
           AND attname = 'row_id') = 'uuid'::regtype THEN
        ALTER TABLE villager_migration.rebuild_log ALTER COLUMN row_id TYPE text;
    END IF;
END
$do$

-- name: fn_rebuild_log
-- The keys a write touched (both, when an update changes the key); a TRUNCATE logs a NULL key.
-- TG_ARGV[0]: the key column, when it is not `id` (read through the row as JSON, whatever its type).
CREATE OR REPLACE FUNCTION villager_migration.rebuild_log() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    old_key text;
    new_key text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO villager_migration.rebuild_log (table_name, row_id) VALUES (TG_TABLE_NAME, NULL);
        RETURN NULL;
    END IF;
    IF TG_NARGS = 0 THEN
        IF TG_OP <> 'INSERT' THEN old_key := OLD.id::text; END IF;
        IF TG_OP <> 'DELETE' THEN new_key := NEW.id::text; END IF;
    ELSE
        IF TG_OP <> 'INSERT' THEN old_key := to_jsonb(OLD) ->> TG_ARGV[0]; END IF;
        IF TG_OP <> 'DELETE' THEN new_key := to_jsonb(NEW) ->> TG_ARGV[0]; END IF;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO villager_migration.rebuild_log (table_name, row_id) VALUES (TG_TABLE_NAME, old_key);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND new_key IS DISTINCT FROM old_key) THEN
        INSERT INTO villager_migration.rebuild_log (table_name, row_id) VALUES (TG_TABLE_NAME, new_key);
    END IF;
    RETURN NULL;
END
$fn$;

-- name: fn_rebuild_replay
-- Apply up to `max_rows` logged changes to the copy (NULL: all of them): each logged key is deleted
-- from the copy and copied again from the live table as it is now (`copy_sql` inserts the rows whose
-- keys are $1, a text[] it casts to the key's type). Only the log rows read here are removed: a
-- change committed meanwhile stays for the next call. `key_col`, `key_type`: the primary key and its
-- SQL type.
-- The copy's unique indexes hold only if, afterwards, every row of the copy is as of one moment: the
-- callers take every logged change (no `max_rows`), the catch-up in one REPEATABLE READ snapshot
-- (log and table read at the same moment), the swap under its locks. A bounded call, or one whose
-- log and table reads see different moments, re-copies a row that took a value of a unique index
-- (not the key: both keys of a moved row are logged) from a row whose own change it has not read
-- yet: the stale row is still in the copy, and the insert fails with a unique violation (every
-- later call too).
CREATE OR REPLACE FUNCTION villager_migration.rebuild_replay(tbl text, key_col text, key_type text, copy_sql text,
                                                            max_rows integer)
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    seqs bigint[];
    ids text[];
    truncated boolean;
BEGIN
    SELECT array_agg(seq), array_agg(DISTINCT row_id) FILTER (WHERE row_id IS NOT NULL), bool_or(row_id IS NULL)
      INTO seqs, ids, truncated
      FROM (SELECT l.seq, l.row_id FROM villager_migration.rebuild_log l
             WHERE l.table_name = tbl ORDER BY l.seq LIMIT max_rows) s;
    IF seqs IS NULL THEN
        RETURN 0;
    END IF;
    IF truncated THEN
        EXECUTE format('DELETE FROM villager_migration.%1$I n WHERE NOT EXISTS'
                       ' (SELECT 1 FROM public.%1$I o WHERE o.%2$I = n.%2$I)', tbl, key_col);
    END IF;
    IF ids IS NOT NULL THEN
        EXECUTE format('DELETE FROM villager_migration.%I WHERE %I = ANY($1::%s[])', tbl, key_col, key_type) USING ids;
        EXECUTE copy_sql USING ids;
    END IF;
    DELETE FROM villager_migration.rebuild_log WHERE seq = ANY(seqs);
    RETURN cardinality(seqs);
END
$fn$;

-- name: fn_rebuild_recopy
-- Copy again the rows `rebuild_recheck` numbers from lo + 1 to hi (the rows the copy guessed wrong,
-- by key and by their place in the copy): each is deleted from the copy (by place: the copy has no
-- index yet) and copied from the live table as it is now, like the copy itself (a row changed since
-- is in the log and replayed after).
CREATE OR REPLACE FUNCTION villager_migration.rebuild_recopy(tbl text, copy_sql text, lo bigint, hi bigint)
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    ids text[];
    places tid[];
BEGIN
    SELECT array_agg(r.k), array_agg(r.t) INTO ids, places
      FROM villager_migration.rebuild_recheck r WHERE r.n > lo AND r.n <= hi;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('DELETE FROM villager_migration.%I WHERE ctid = ANY($1)', tbl) USING places;
    EXECUTE copy_sql USING ids;
    RETURN cardinality(ids);
END
$fn$;

-- name: fn_rebuild_swap
-- Called under ACCESS EXCLUSIVE locks on the table and the tables its foreign keys reference:
-- replays the rest of the log, then puts the copy in the table's place with what the table
-- carried besides rows and indexes (foreign keys and checks, triggers and their enabled state,
-- owner, grants, storage options, comment). Foreign keys and checks come back NOT VALID (adding
-- them validated would scan the table under these locks); the returned names were valid before
-- and are validated right after, without blocking anyone. The old table is left in
-- villager_migration_retired, without foreign keys, for the caller to drop once the locks are gone.
CREATE OR REPLACE FUNCTION villager_migration.rebuild_swap(tbl text, key_col text, key_type text, copy_sql text)
RETURNS text[]
LANGUAGE plpgsql AS $fn$
DECLARE
    old_rel regclass := format('public.%I', tbl)::regclass;
    r record;
    stmts text[] := '{}';
    validate text[] := '{}';
    owner_name text;
    options text[];
    descr text;
    owned text[] := '{}';
    last bigint;
    called boolean;
BEGIN
    -- A REPEATABLE READ or SERIALIZABLE transaction that holds a snapshot from before the swap and
    -- reads the table only after it would see the copy as of that snapshot, without the changes
    -- replayed here (TRUNCATE and CLUSTER have the same hazard). One that read the table already
    -- holds a lock the swap waits for; one idle between statements is waited for the same way.
    IF EXISTS (SELECT 1 FROM pg_stat_activity a
                WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                  AND a.backend_type = 'client backend' AND a.state LIKE 'idle in transaction%'
                  AND a.backend_xmin IS NOT NULL) THEN
        RAISE EXCEPTION 'a transaction holds a snapshot from before the swap of %', tbl
              USING ERRCODE = 'lock_not_available';
    END IF;
    WHILE villager_migration.rebuild_replay(tbl, key_col, key_type, copy_sql, NULL) > 0 LOOP
    END LOOP;
    FOR r IN SELECT c.conname, pg_get_constraintdef(c.oid) AS def, c.convalidated
               FROM pg_constraint c WHERE c.conrelid = old_rel AND c.contype IN ('f', 'c') ORDER BY c.conname LOOP
        stmts := stmts || format('ALTER TABLE public.%I ADD CONSTRAINT %I %s%s', tbl, r.conname, r.def,
                                 CASE WHEN r.convalidated THEN ' NOT VALID' ELSE '' END);
        IF r.convalidated THEN
            validate := validate || r.conname::text;
        END IF;
    END LOOP;
    FOR r IN SELECT t.tgname, pg_get_triggerdef(t.oid) AS def, t.tgenabled
               FROM pg_trigger t WHERE t.tgrelid = old_rel AND NOT t.tgisinternal
                AND t.tgname NOT LIKE 'villager_rebuild_log%' ORDER BY t.tgname LOOP
        stmts := stmts || r.def;
        stmts := stmts || format('ALTER TABLE public.%I %s TRIGGER %I', tbl,
                                 CASE r.tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA'
                                                  WHEN 'A' THEN 'ENABLE ALWAYS' ELSE 'ENABLE' END, r.tgname);
    END LOOP;
    FOR r IN SELECT a.privilege_type, a.is_grantable,
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.rolname) END AS grantee
               FROM pg_class c, aclexplode(c.relacl) a LEFT JOIN pg_roles g ON g.oid = a.grantee
              WHERE c.oid = old_rel AND a.grantee <> c.relowner LOOP
        stmts := stmts || format('GRANT %s ON public.%I TO %s%s', r.privilege_type, tbl, r.grantee,
                                 CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    -- Each column's planner settings (SET STATISTICS, n_distinct), which LIKE does not copy.
    FOR r IN SELECT a.attname, coalesce(a.attstattarget::int, -1) AS target,
                    array_to_string(array(SELECT o FROM unnest(a.attoptions) o WHERE o LIKE 'n\_distinct%'), ', ') AS opts
               FROM pg_attribute a WHERE a.attrelid = old_rel AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum LOOP
        IF r.target >= 0 THEN
            stmts := stmts || format('ALTER TABLE public.%I ALTER COLUMN %I SET STATISTICS %s', tbl, r.attname, r.target);
        END IF;
        IF r.opts <> '' THEN
            stmts := stmts || format('ALTER TABLE public.%I ALTER COLUMN %I SET (%s)', tbl, r.attname, r.opts);
        END IF;
    END LOOP;
    SELECT quote_ident(o.rolname), c.reloptions, obj_description(c.oid, 'pg_class')
      INTO owner_name, options, descr
      FROM pg_class c JOIN pg_roles o ON o.oid = c.relowner WHERE c.oid = old_rel;
    -- The old table is moved aside, not dropped: a DROP removes its files and its shared buffers at
    -- commit, still under these locks (hundreds of milliseconds for gigabytes). Its foreign keys
    -- go now (their triggers on the referenced tables would check its rows); the table itself is
    -- dropped after this transaction, by then locking nobody (steps/rebuild.py).
    FOR r IN SELECT c.conname FROM pg_constraint c WHERE c.conrelid = old_rel AND c.contype = 'f' LOOP
        EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT %I', tbl, r.conname);
    END LOOP;
    -- A serial column's sequence stays where it is, and goes on with the copy's column (whose
    -- default, copied by LIKE, already calls it); moved with the old table it would be dropped with it.
    FOR r IN SELECT format('%I.%I', sn.nspname, s.relname) AS seq, a.attname
               FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
               JOIN pg_namespace sn ON sn.oid = s.relnamespace
               JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
              WHERE d.classid = 'pg_class'::regclass AND d.refobjid = old_rel AND d.deptype = 'a' LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNED BY NONE', r.seq);
        owned := owned || format('ALTER SEQUENCE %s OWNED BY public.%I.%I', r.seq, tbl, r.attname);
    END LOOP;
    CREATE SCHEMA IF NOT EXISTS villager_migration_retired;
    EXECUTE format('DROP TABLE IF EXISTS villager_migration_retired.%I', tbl);
    EXECUTE format('ALTER TABLE public.%I SET SCHEMA villager_migration_retired', tbl);
    EXECUTE format('ALTER TABLE villager_migration.%I SET SCHEMA public', tbl);
    FOR i IN 1 .. coalesce(array_length(owned, 1), 0) LOOP
        EXECUTE owned[i];
    END LOOP;
    -- An identity column's sequence went with the old table; the copy's own (moved in with it, its
    -- options copied by LIKE) takes over where the old one stood.
    FOR r IN SELECT a.attname FROM pg_attribute a WHERE a.attrelid = format('public.%I', tbl)::regclass
                AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity <> '' LOOP
        EXECUTE format('SELECT last_value, is_called FROM %s',
                       pg_get_serial_sequence(format('villager_migration_retired.%I', tbl), r.attname))
           INTO last, called;
        PERFORM setval(pg_get_serial_sequence(format('public.%I', tbl), r.attname), last, called);
    END LOOP;
    EXECUTE format('ALTER TABLE public.%I OWNER TO %s', tbl, owner_name);
    IF options IS NOT NULL THEN
        EXECUTE format('ALTER TABLE public.%I SET (%s)', tbl, array_to_string(options, ', '));
    END IF;
    IF descr IS NOT NULL THEN
        EXECUTE format('COMMENT ON TABLE public.%I IS %L', tbl, descr);
    END IF;
    FOR i IN 1 .. coalesce(array_length(stmts, 1), 0) LOOP
        EXECUTE stmts[i];
    END LOOP;
    RETURN validate;
END
$fn$;
