"""Data validation: a Great Expectations suite built from the data set's own profile, with skew and drift
checks.

Nothing in the suite is a constant of one data set: the class set and the per-split class shares come from the
data card and the training split, the distributions from the training split's profile. One table feeds the suite:
a row per image (split, label, brightness, contrast, original size and channels, whether a held-out image duplicates
a training image exactly or by perceptual hash) and a row per distance check (split against train: skew; this
version's training data against the production model's: drift), each with its threshold. A failed suite stops the
pipeline before training, naming every failed expectation; the Data Docs page shows each compared pair of
histograms side by side.

Modules: comparisons (which profiles are compared: skew and drift, through aimass/data/profile.py, the same
distances live monitoring uses), suite (the table and the GX suite), report (the verdict, its pages and error),
stage (`validate_data`, the validate_data stage's work; components/validate_data.py is its KFP wrapper).
"""
