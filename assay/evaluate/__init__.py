"""Evaluation: evaluate(), scorers, judges, results and gates (coming next)."""
