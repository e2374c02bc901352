"""Axis-group analysis: which tensor axes must grow together (see DESIGN.md)."""

from .groups import Analysis, Group, analyse
from .rules import RULES, Rule, rule

__all__ = ["Analysis", "Group", "analyse", "RULES", "Rule", "rule"]
