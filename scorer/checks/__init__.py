"""Checks floor: measured once per model, kept in state/: may JPEGs be drafted, may int8 score this model."""
