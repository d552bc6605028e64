"""Choosing the replica for each request: the prefix index, the picker and the replicas it picks from."""
