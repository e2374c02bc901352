"""Rewrite passes: each file is one pass (see base.py for their shape) over a ModelProto."""
