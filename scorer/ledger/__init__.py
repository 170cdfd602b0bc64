"""Ledger floor: the SQLite record of what was scored, written by `scorer watch`, read by the others."""
