"""Sub-commands that grow models (inspect, widen, deepen, export); filled in by later passes."""
from __future__ import annotations

import argparse
from typing import Callable


def add_commands(sub: argparse._SubParsersAction, add_verify_flags: Callable) -> None:
    """Register the growth sub-commands."""
    return None
