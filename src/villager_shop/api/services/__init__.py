"""What the routes call: one module per area; each owns its SQL (api/queries) and transactions."""
