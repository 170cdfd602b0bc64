"""Scoring floor: the classifier, the engine that scores a batch, and the assembly that opens them for every room."""
