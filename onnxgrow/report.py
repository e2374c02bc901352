"""Human-readable rendering of results with rich (tables), kept apart from the API."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .verify import Report


def fmt(x: float) -> str:
    if x != x:
        return "nan"
    if x == float("inf"):
        return "inf"
    return f"{x:.3g}"


def verify_table(report: Report, title: str = "verify") -> Table:
    table = Table(title=f"{title}: {'PASS' if report.passed else 'FAIL'} "
                        f"(provider {report.provider}, {report.iterations} iteration(s), seed {report.seed})")
    for col in ("output", "shape", "max abs err", "max rel err", "atol/rtol", "result"):
        table.add_column(col)
    for o in report.outputs:
        result = "pass" if o.passed else f"FAIL ({o.reason})"
        table.add_row(o.name, "x".join(map(str, o.shape)) or "scalar", fmt(o.max_abs), fmt(o.max_rel),
                      f"{o.atol:g}/{o.rtol:g}", result)
    return table


def console(stderr: bool = False) -> Console:
    """A console that does not wrap or colour when it is not a terminal (tests, CI, pipes)."""
    return Console(stderr=stderr, width=200 if not _tty(stderr) else None, highlight=False)


def _tty(stderr: bool) -> bool:
    import sys

    return (sys.stderr if stderr else sys.stdout).isatty()
