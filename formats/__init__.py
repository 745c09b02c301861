"""Chip format v1: the in-memory model, its byte layout (see SPEC.md), reader and writer."""
