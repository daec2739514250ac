"""Online learning: River model factories, progressive validation, later delayed labels and drift.

Learners learn per bar or per labelled signal, never per trade (DESIGN.md).
"""
