"""The fleet's shared state (`--state-store`): what every replica and bridge must agree on.

One concept per module:
- `connection`: the store's URL and its connection (embedded: in-process + SQLite; or Redis);
- `failure`: what happens when the store cannot be reached (`--state-store-failure`);
- the state kept in it: per-token limits, usage, fair-share counters (see each module).
"""
