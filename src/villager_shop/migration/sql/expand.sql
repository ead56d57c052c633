-- The new structures of the normalized schema. New tables are empty when created, so their own
-- indexes are built inline; everything on the legacy tables is added in separate, short steps.

-- name: addresses
CREATE TABLE IF NOT EXISTS public.addresses (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    house_number text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT addresses_house_number_key UNIQUE (house_number)
);

-- name: product_categories
CREATE TABLE IF NOT EXISTS public.product_categories (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL,
    name_key   text GENERATED ALWAYS AS (villager_migration.category_key(name)) STORED,
    slug       text NOT NULL,
    is_active  boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT product_categories_slug_key UNIQUE (slug),
    CONSTRAINT product_categories_name_key_key UNIQUE (name_key),
    CONSTRAINT chk_product_categories_name_not_blank CHECK (name_key IS NOT NULL),
    CONSTRAINT chk_product_categories_slug_format CHECK (slug <> '' AND slug = lower(slug))
);

-- name: product_variants
CREATE TABLE IF NOT EXISTS public.product_variants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    product_id uuid NOT NULL REFERENCES public.products (id) ON DELETE CASCADE ON UPDATE CASCADE,
    sku        text NOT NULL,
    name       text NOT NULL,
    price      numeric(10, 2) NOT NULL,
    stock      bigint NOT NULL DEFAULT 0,
    is_default boolean NOT NULL DEFAULT false,
    is_active  boolean NOT NULL DEFAULT true,
    sort_order bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT product_variants_sku_key UNIQUE (sku),
    CONSTRAINT chk_product_variants_price_positive CHECK (price > 0),
    CONSTRAINT chk_product_variants_stock_nonnegative CHECK (stock >= 0)
);
CREATE UNIQUE INDEX IF NOT EXISTS product_variants_one_default_idx
    ON public.product_variants (product_id) INCLUDE (id) WHERE is_default;
CREATE INDEX IF NOT EXISTS product_variants_product_sort_idx
    ON public.product_variants (product_id, sort_order, id);
