"""Thin Kopf handlers: they parse, delegate to the controllers and report."""
