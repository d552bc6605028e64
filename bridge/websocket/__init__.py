"""The legacy WebSocket protocol: one session per connection (session.py) and its answer frames
(frames.py)."""
