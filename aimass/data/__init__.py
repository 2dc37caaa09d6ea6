"""Data sets: importing a team's images (folders, manifests, IDX), the data card that describes them, the one
preprocessing function every stage and the server share, decoded arrays, statistics for validation, and DVC versions.
"""
