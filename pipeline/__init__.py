"""The generation worker and the Faust session-state app (prompt commands in, token events out)."""
