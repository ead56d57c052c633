"""HTTP routes: parse, call one service, answer. JSON under /api, probes under /health."""
