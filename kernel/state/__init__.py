"""The fleet's shared state (`--state-store`): what every replica and bridge must agree on.

One concept per module:
- `connection`: the store's URL and its connection (embedded: in-process + SQLite; or Redis);
- `failure`: what happens when the store cannot be reached (`--state-store-failure`);
- `limits`: a token's rpm, tpm, streams and daily budget (admit, reserve, settle), counted in
  `windows` (this process), `redis_limits` (Lua scripts, the fleet) and `daily` (SQLite); a refusal
  is a `refusal.LimitExceeded`;
- `usage`: tokens used per token name, model and UTC day;
- `fair_share`: the virtual token counters admission orders waiting requests by (VTC);
- `repeating`: the background work each of them repeats while open (leases, retries, syncs).
The Responses API keeps its stored responses in the same store (chatllm.bridge.responses).
"""
