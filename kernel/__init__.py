"""The shared kernel: what every ChatLLM process agrees on, below the server and the bridge.

- `config`: the one configuration object, in sections, and `flags`: its command line and env;
- `access`: the accepted tokens, their names and per-token limits (the token file);
- `tls`: certificate files, gRPC credentials and the re-readable HTTPS context;
- `json_depth`: the nesting limit both sides apply to JSON text before decoding it.

Nothing here imports the server, the bridge, the clients or the CLI (tests/unit/test_layering.py).
"""
