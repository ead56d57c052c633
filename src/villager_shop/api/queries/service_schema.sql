-- The service's own tables (never the legacy ones): passwords and idempotency keys. Created on
-- demand by `users set-password` and at startup, under a short lock_timeout. Their foreign keys
-- follow the legacy keys (the old application may change a user's or an order's id); a rollback
-- moves these tables to its archive schema, so nothing of the service holds on to legacy rows.
CREATE SCHEMA IF NOT EXISTS villager_service;
CREATE TABLE IF NOT EXISTS villager_service.credentials (
    user_id       uuid PRIMARY KEY REFERENCES public.users (id) ON DELETE CASCADE ON UPDATE CASCADE,
    password_hash text NOT NULL,
    token_version integer NOT NULL DEFAULT 1,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS villager_service.idempotency_keys (
    user_id      uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE ON UPDATE CASCADE,
    key          text NOT NULL,
    request_hash text NOT NULL,
    order_id     uuid REFERENCES public.orders (id) ON DELETE CASCADE ON UPDATE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (user_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_order_id_idx ON villager_service.idempotency_keys (order_id);
