-- Keep the legacy and the normalized representations equal while both applications write,
-- from `migrate run` until `migrate complete` (or `rollback`). Every trigger is skipped inside the
-- backfill's own transactions (SET LOCAL villager.backfill = 'on'), which compute the same values
-- set-based. Rule of precedence on one write: a changed legacy column wins; otherwise a changed new
-- column is carried back to the legacy one, keeping the legacy spelling when it is equivalent.
-- Any other write to a row that is not migrated yet migrates it (a row version written after the
-- triggers exist is always complete: the physical backfill walk relies on it).

-- name: fn_sync_address
-- users, shops: house_number <-> address_id
CREATE OR REPLACE FUNCTION villager_migration.sync_address() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    addr text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.address_id IS NOT NULL
           AND villager_migration.canonical_house_number(NEW.house_number) IS NULL THEN
            SELECT house_number INTO NEW.house_number FROM public.addresses WHERE id = NEW.address_id;
            RETURN NEW;
        END IF;
        NEW.address_id := villager_migration.ensure_address(
            villager_migration.canonical_house_number(NEW.house_number));
        IF pg_trigger_depth() = 1 THEN
            PERFORM nextval('villager_migration.legacy_writes');
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.house_number IS DISTINCT FROM OLD.house_number THEN
        -- Another spelling of the same house keeps its address without locking it: a rename of
        -- that address waiting for this row (it holds the address, we hold the row) would deadlock.
        IF OLD.address_id IS NULL OR NEW.address_id IS DISTINCT FROM OLD.address_id
           OR villager_migration.canonical_house_number(NEW.house_number)
              IS DISTINCT FROM villager_migration.canonical_house_number(OLD.house_number) THEN
            NEW.address_id := villager_migration.ensure_address(
                villager_migration.canonical_house_number(NEW.house_number));
        END IF;
        IF pg_trigger_depth() = 1 THEN
            PERFORM nextval('villager_migration.legacy_writes');
        END IF;
    ELSIF NEW.address_id IS DISTINCT FROM OLD.address_id THEN
        IF NEW.address_id IS NULL THEN
            NEW.house_number := NULL;
        ELSE
            SELECT house_number INTO addr FROM public.addresses WHERE id = NEW.address_id;
            IF villager_migration.canonical_house_number(NEW.house_number) IS DISTINCT FROM addr THEN
                NEW.house_number := addr;
            END IF;
        END IF;
    ELSIF NEW.address_id IS NULL AND NEW.house_number IS NOT NULL THEN
        NEW.address_id := villager_migration.ensure_address(
            villager_migration.canonical_house_number(NEW.house_number));
    END IF;
    RETURN NEW;
END
$fn$;

-- name: fn_sync_address_row
-- addresses: keep house_number canonical; a renamed address renames the legacy text of its users.
CREATE OR REPLACE FUNCTION villager_migration.sync_address_row() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_WHEN = 'BEFORE' THEN
        NEW.house_number := villager_migration.canonical_house_number(NEW.house_number);
        RETURN NEW;
    END IF;
    IF NEW.house_number IS DISTINCT FROM OLD.house_number THEN
        UPDATE public.users SET house_number = NEW.house_number
         WHERE address_id = NEW.id
           AND villager_migration.canonical_house_number(house_number) IS DISTINCT FROM NEW.house_number;
        UPDATE public.shops SET house_number = NEW.house_number
         WHERE address_id = NEW.id
           AND villager_migration.canonical_house_number(house_number) IS DISTINCT FROM NEW.house_number;
    END IF;
    RETURN NULL;
END
$fn$;

-- name: fn_sync_category_row
-- product_categories: a renamed category renames the legacy text of its products; slug defaults.
CREATE OR REPLACE FUNCTION villager_migration.sync_category_row() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_WHEN = 'BEFORE' THEN
        NEW.name := coalesce(villager_migration.category_name(NEW.name), NEW.name);
        IF NEW.slug IS NULL OR NEW.slug = '' THEN
            NEW.slug := villager_migration.slugify(NEW.name);
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.name IS DISTINCT FROM OLD.name THEN
        UPDATE public.products SET category = NEW.name
         WHERE category_id = NEW.id
           AND villager_migration.category_key(category) IS DISTINCT FROM NEW.name_key;
    END IF;
    RETURN NULL;
END
$fn$;

-- name: fn_sync_product_before
-- products: category <-> category_id, price <-> base_price (NULL while the price is not positive).
CREATE OR REPLACE FUNCTION villager_migration.sync_product_before() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    cat_name text;
    cat_key text;
    legacy_write boolean := false;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.category_id IS NOT NULL AND villager_migration.category_key(NEW.category) IS NULL THEN
            SELECT name INTO NEW.category FROM public.product_categories WHERE id = NEW.category_id;
        ELSE
            NEW.category_id := villager_migration.ensure_category(NEW.category);
        END IF;
        IF NEW.price IS NULL THEN
            NEW.price := NEW.base_price;          -- written by the new application
        ELSE
            legacy_write := NEW.base_price IS NULL;
        END IF;
    ELSE
        IF NEW.category IS DISTINCT FROM OLD.category THEN
            -- Another spelling of the same category keeps it without locking it (see sync_address).
            IF OLD.category_id IS NULL OR NEW.category_id IS DISTINCT FROM OLD.category_id
               OR villager_migration.category_key(NEW.category)
                  IS DISTINCT FROM villager_migration.category_key(OLD.category) THEN
                NEW.category_id := villager_migration.ensure_category(NEW.category);
            END IF;
            legacy_write := true;
        ELSIF NEW.category_id IS DISTINCT FROM OLD.category_id THEN
            IF NEW.category_id IS NULL THEN
                NEW.category := NULL;
            ELSE
                SELECT name, name_key INTO cat_name, cat_key
                  FROM public.product_categories WHERE id = NEW.category_id;
                IF villager_migration.category_key(NEW.category) IS DISTINCT FROM cat_key THEN
                    NEW.category := cat_name;
                END IF;
            END IF;
        ELSIF NEW.category_id IS NULL AND NEW.category IS NOT NULL THEN
            NEW.category_id := villager_migration.ensure_category(NEW.category);
        END IF;
        IF NEW.price IS DISTINCT FROM OLD.price OR NEW.stock IS DISTINCT FROM OLD.stock THEN
            legacy_write := true;
        ELSIF NEW.base_price IS DISTINCT FROM OLD.base_price AND NEW.base_price IS NOT NULL THEN
            NEW.price := NEW.base_price;
        END IF;
    END IF;
    NEW.base_price := CASE WHEN NEW.price > 0 THEN NEW.price END;
    IF legacy_write AND pg_trigger_depth() = 1 THEN
        PERFORM nextval('villager_migration.legacy_writes');
    END IF;
    RETURN NEW;
END
$fn$;

-- name: fn_sync_product_after
-- products -> product_variants: the default variant carries price and stock (negative stock is
-- stored as 0). A product whose price is not positive is quarantined and its default variant,
-- if any, deactivated (it may be referenced by order items, so it is never deleted).
CREATE OR REPLACE FUNCTION villager_migration.sync_product_after() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    new_variant uuid;
    created boolean;
BEGIN
    IF NEW.price > 0 THEN
        IF TG_OP = 'UPDATE' AND NEW.price = OLD.price AND NEW.stock = OLD.stock AND OLD.price > 0
           AND EXISTS (SELECT 1 FROM public.product_variants WHERE product_id = NEW.id AND is_default) THEN
            RETURN NULL;
        END IF;
        -- The default variant takes its product's id, as in the backfill (the order_items copy
        -- guesses it), unless a variant has that id already.
        INSERT INTO public.product_variants AS v
               (id, product_id, sku, name, price, stock, is_default, is_active, sort_order, created_at, updated_at)
        VALUES (CASE WHEN EXISTS (SELECT 1 FROM public.product_variants w WHERE w.id = NEW.id) THEN gen_random_uuid()
                     ELSE NEW.id END,
                NEW.id, NEW.id::text || '-default', 'Default', NEW.price, greatest(NEW.stock, 0),
                true, true, 0, NEW.created_at, now())
        ON CONFLICT (product_id) WHERE is_default DO UPDATE
           SET price = EXCLUDED.price, stock = EXCLUDED.stock, updated_at = now(),
               is_active = v.is_active OR (TG_OP = 'UPDATE' AND OLD.price <= 0)
         WHERE v.price IS DISTINCT FROM EXCLUDED.price OR v.stock IS DISTINCT FROM EXCLUDED.stock
            OR (NOT v.is_active AND TG_OP = 'UPDATE' AND OLD.price <= 0)
        RETURNING v.id, (v.xmax = 0) INTO new_variant, created;
        IF new_variant IS NULL AND TG_OP = 'UPDATE' AND OLD.price <= 0 THEN
            -- Priced through a default variant the new application has just added (its trigger
            -- wrote this price): that variant is the one waiting items get.
            SELECT id INTO new_variant FROM public.product_variants WHERE product_id = NEW.id AND is_default;
        END IF;
        IF TG_OP = 'UPDATE' AND (OLD.price <= 0 OR new_variant IS NOT NULL) THEN
            DELETE FROM villager_migration.quarantine WHERE table_name = 'products' AND row_id = NEW.id;
            -- Only a variant that did not exist before can have order items waiting for it (an
            -- ordinary price change must not touch order_items, which the backfill may be holding).
            IF new_variant IS NOT NULL AND (created OR OLD.price <= 0) THEN
                -- Items ordered while the product had no variant; their own trigger clears their
                -- quarantine entries.
                UPDATE public.order_items SET variant_id = new_variant
                 WHERE product_id = NEW.id AND order_items.variant_id IS NULL;
            END IF;
        END IF;
    ELSE
        UPDATE public.product_variants SET is_active = false, updated_at = now()
         WHERE product_id = NEW.id AND is_default AND is_active;
        INSERT INTO villager_migration.quarantine (table_name, row_id, reason, detail)
        VALUES ('products', NEW.id, 'non_positive_price', to_jsonb(NEW))
        ON CONFLICT (table_name, row_id) DO UPDATE
           SET reason = EXCLUDED.reason, detail = EXCLUDED.detail, quarantined_at = now();
    END IF;
    RETURN NULL;
END
$fn$;

-- name: fn_sync_variant_after
-- product_variants -> products: the default variant's price and stock go back to the legacy
-- columns (a legacy stock below zero is kept while the variant says 0).
CREATE OR REPLACE FUNCTION villager_migration.sync_variant_after() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT NEW.is_default THEN
        RETURN NULL;
    END IF;
    UPDATE public.products
       SET price = NEW.price,
           stock = CASE WHEN greatest(stock, 0) = NEW.stock THEN stock ELSE NEW.stock END
     WHERE id = NEW.product_id
       AND (price IS DISTINCT FROM NEW.price OR greatest(stock, 0) IS DISTINCT FROM NEW.stock)
       AND (NEW.is_active OR price > 0);
    RETURN NULL;
END
$fn$;

-- name: fn_keep_default_variant
-- While the legacy columns are live, a product's price and stock live in its default variant: a
-- deleted default variant would leave the legacy price of a product that has none. Refused (the
-- product itself may be deleted, which takes its variants along; a variant can be deactivated).
CREATE OR REPLACE FUNCTION villager_migration.keep_default_variant() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF OLD.is_default AND EXISTS (SELECT 1 FROM public.products WHERE id = OLD.product_id) THEN
        RAISE EXCEPTION 'the default variant of product % cannot be deleted while the legacy price and stock'
                        ' columns are in use (until migrate complete)', OLD.product_id
              USING ERRCODE = 'restrict_violation',
                    HINT = 'deactivate it (is_active = false), change its price or stock, or delete the product';
    END IF;
    RETURN OLD;
END
$fn$;

-- name: fn_default_variant
-- The default variant of a product. A product without one that is quarantined for its price may
-- be being priced right now by another transaction, whose variant appears at its commit: wait for
-- it (a share lock; a pricing that comes later waits for this item instead, and then links it).
-- Products the backfill has not reached have no quarantine entry and are not waited for (the
-- order_items step links their items).
CREATE OR REPLACE FUNCTION villager_migration.default_variant(product uuid) RETURNS uuid
LANGUAGE plpgsql AS $fn$
DECLARE
    found_id uuid;
BEGIN
    SELECT id INTO found_id FROM public.product_variants WHERE product_id = product AND is_default;
    IF found_id IS NULL AND EXISTS (SELECT 1 FROM villager_migration.quarantine
                                     WHERE table_name = 'products' AND row_id = product) THEN
        PERFORM 1 FROM public.products WHERE id = product AND NOT coalesce(price > 0, false) FOR SHARE;
        SELECT id INTO found_id FROM public.product_variants WHERE product_id = product AND is_default;
    END IF;
    RETURN found_id;
END
$fn$;

-- name: fn_sync_order_item
-- order_items: product_id <-> variant_id (the default variant for legacy writes). Items whose
-- product has no sellable variant, or whose quantity is not positive, are quarantined.
CREATE OR REPLACE FUNCTION villager_migration.sync_order_item() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    reason text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.variant_id IS NOT NULL THEN
            SELECT product_id INTO NEW.product_id FROM public.product_variants WHERE id = NEW.variant_id;
        ELSE
            NEW.variant_id := villager_migration.default_variant(NEW.product_id);
            IF pg_trigger_depth() = 1 THEN  -- an old application's item: `complete` must wait for it
                PERFORM nextval('villager_migration.legacy_writes');
            END IF;
        END IF;
    ELSIF NEW.product_id IS DISTINCT FROM OLD.product_id THEN
        NEW.variant_id := villager_migration.default_variant(NEW.product_id);
    ELSIF NEW.variant_id IS DISTINCT FROM OLD.variant_id AND NEW.variant_id IS NOT NULL THEN
        SELECT product_id INTO NEW.product_id FROM public.product_variants WHERE id = NEW.variant_id;
    ELSIF NEW.variant_id IS NULL THEN
        NEW.variant_id := villager_migration.default_variant(NEW.product_id);
    ELSIF NEW.quantity IS NOT DISTINCT FROM OLD.quantity AND NEW.id = OLD.id THEN
        RETURN NEW;
    END IF;
    reason := CASE WHEN NEW.variant_id IS NULL THEN 'product_without_variant'
                   WHEN NEW.quantity <= 0 THEN 'non_positive_quantity' END;
    IF reason IS NULL THEN
        IF TG_OP = 'UPDATE' THEN
            DELETE FROM villager_migration.quarantine WHERE table_name = 'order_items' AND row_id = NEW.id;
        END IF;
    ELSE
        INSERT INTO villager_migration.quarantine (table_name, row_id, reason, detail)
        VALUES ('order_items', NEW.id, reason, to_jsonb(NEW))
        ON CONFLICT (table_name, row_id) DO UPDATE
           SET reason = EXCLUDED.reason, detail = EXCLUDED.detail, quarantined_at = now();
    END IF;
    RETURN NEW;
END
$fn$;

-- name: fn_sync_order
-- orders: amounts that do not add up, or are negative, are quarantined (the row stays as is);
-- checked on every write, so an order the backfill has not reached is settled by any update.
CREATE OR REPLACE FUNCTION villager_migration.sync_order() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    reason text := villager_migration.order_problem(NEW.subtotal, NEW.delivery_fee, NEW.total);
BEGIN
    IF reason IS NULL THEN
        IF TG_OP = 'UPDATE' THEN
            DELETE FROM villager_migration.quarantine WHERE table_name = 'orders' AND row_id = NEW.id;
        END IF;
    ELSE
        INSERT INTO villager_migration.quarantine (table_name, row_id, reason, detail)
        VALUES ('orders', NEW.id, reason, to_jsonb(NEW))
        ON CONFLICT (table_name, row_id) DO UPDATE
           SET reason = EXCLUDED.reason, detail = EXCLUDED.detail, quarantined_at = now();
    END IF;
    RETURN NULL;
END
$fn$;

-- name: fn_forget_deleted
-- A deleted legacy row leaves the quarantine too (statement-level, one DELETE per statement).
CREATE OR REPLACE FUNCTION villager_migration.forget_deleted() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM villager_migration.quarantine q USING old_rows o
     WHERE q.table_name = TG_TABLE_NAME AND q.row_id = o.id;
    RETURN NULL;
END
$fn$;

-- name: fn_forget_old_key
-- A legacy row whose primary key changes takes its quarantine entry along: the entry under the old
-- key goes, and the row's own sync trigger has just re-checked it under the new key.
CREATE OR REPLACE FUNCTION villager_migration.forget_old_key() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM villager_migration.quarantine WHERE table_name = TG_TABLE_NAME AND row_id = OLD.id;
    RETURN NULL;
END
$fn$;

-- name: fn_forget_truncated
-- A truncated legacy table (TRUNCATE ... CASCADE included) leaves the quarantine too.
CREATE OR REPLACE FUNCTION villager_migration.forget_truncated() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM villager_migration.quarantine WHERE table_name = TG_TABLE_NAME;
    RETURN NULL;
END
$fn$;

-- name: fn_notify_catalog
-- Any statement that changes the catalog tells listeners (the shop service's cache) once, at
-- commit; identical notifications of one transaction are folded into one by PostgreSQL.
CREATE OR REPLACE FUNCTION villager_migration.notify_catalog() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('{catalog_channel}', TG_TABLE_NAME);
    RETURN NULL;
END
$fn$;
