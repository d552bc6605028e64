"""The one answer pipeline every protocol shares: the Generate call relayed (relay.py), the answer so far
(progress.py), and the pipeline that turns it into one protocol's chunks through that protocol's encoder
(pipeline.py)."""
