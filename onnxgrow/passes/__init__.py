"""Rewrite passes: each file is one pass over a ModelProto."""
