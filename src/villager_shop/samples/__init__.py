"""Sample legacy schemas that are not villager_shop (a blog, a library), each with a generator of
messy data, a live writer and an independent check: they prove the plan-file engine on schemas it
was not written for (`villager-shop sample create`, then `migrate run --plan plans/<name>.toml`)."""
