"""Routing: pick a worker for each request (`policies.make_policy(RouterConfig)`).

`config` (flags), `indexer` (prefix index fed by KV events), `active_sequences` (per-worker
load), `selection` (cost, ties, softmax, busy filter), `approx` (`--no-kv-events`),
`policies` / `kv_policy` (the `RoutingPolicy` implementations of `base`).
"""
