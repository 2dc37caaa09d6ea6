"""Evaluation: score the model chosen among the teacher and its compressed candidates on the test split (read
here only), and apply the gate (aimass/gates.py decides).

Modules: metrics (accuracy, macro-F1, ROC-AUC, per class, confusion), stage (`evaluate`, the evaluate stage's work,
and its report; components/evaluate.py is its KFP wrapper), blessing (bless and reject, after the gate).
"""
