"""The shop service's cache: `store` (Redis and the per-worker copies, generations, invalidation,
single-flight rebuilds) and `lease` (how long a worker may answer from its own copies). The only
code that talks to Redis."""
