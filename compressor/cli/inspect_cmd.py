"""`chipq inspect` (to be written)."""
