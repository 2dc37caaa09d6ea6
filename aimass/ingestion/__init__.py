"""Ingestion: the ingest stage's work (stage.py; components/ingest.py is its KFP wrapper). How splits are
planned is aimass/data/splits.py; decoding and profiles are aimass/data/."""
