"""Augmentation: the seeded, batched policy (policy.py, kornia) and the augment stage's work (stage.py;
components/augment.py is its KFP wrapper)."""
