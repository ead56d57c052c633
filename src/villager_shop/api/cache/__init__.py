"""The shop service's cache, the only code that talks to Redis: `store` (the `Cache` the services
call: generations, lookups, invalidation) composed of `keys` (key names), `scripts` (the Lua scripts
and the stored-value format), `breaker` (failing open, fast), `local` (the per-worker copies),
`checks` (their shared check in Redis), `flight` (single-flight loads in a worker), `rebuild` (one
rebuild per key across workers), and `lease` (how long a worker may answer from its own copies)."""
