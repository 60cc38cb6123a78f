"""Pure functions that build the objects Tailor creates from a parsed spec (no I/O, no Kopf)."""
