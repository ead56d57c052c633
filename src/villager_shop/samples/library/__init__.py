"""The library sample: books keyed by ISBN name their publisher in free text and carry price and
copies; loans point at books (plans/library.toml moves publishers to a table, price and copies to
editions, and points loans at editions)."""
