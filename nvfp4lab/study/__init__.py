"""Computation behind the notebooks (the study), shared with the finding tests."""
