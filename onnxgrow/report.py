"""Human-readable rendering of results with rich (tables), kept apart from the API."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .verify import Report


def fmt(x: float) -> str:
    if x != x:
        return "nan"
    if x == float("inf"):
        return "inf"
    return f"{x:.3g}"


def verify_table(report: Report, title: str = "verify") -> Table:
    """One row per output. With `relative_to` "output" the error column is the max abs error divided by the
    output's largest |reference| (what rtol is compared with), and the title says so."""
    output = report.relative_to == "output"
    table = Table(title=f"{title}: {'PASS' if report.passed else 'FAIL'} "
                        f"(provider {report.provider}, {report.iterations} iteration(s), seed {report.seed}"
                        + (", rtol relative to each output's largest |value|)" if output else ")"))
    for col in ("output", "shape", "max abs err", "err / max|ref|" if output else "max rel err", "atol/rtol", "result"):
        table.add_column(col)
    for o in report.outputs:
        result = "pass" if o.passed else f"FAIL ({o.reason})"
        table.add_row(escape(o.name), "x".join(map(str, o.shape)) or "scalar", fmt(o.max_abs),
                      fmt(o.normalised if output else o.max_rel), f"{o.atol:g}/{o.rtol:g}", result)
    return table


def console(stderr: bool = False) -> Console:
    """A console that does not wrap or colour when it is not a terminal (tests, CI, pipes)."""
    return Console(stderr=stderr, width=120 if not _tty(stderr) else None, highlight=False, soft_wrap=True)


def _tty(stderr: bool) -> bool:
    import sys

    return (sys.stderr if stderr else sys.stdout).isatty()


def _names(items: list[str], limit: int = 4) -> str:
    return escape(", ".join(items[:limit]) + (f" … (+{len(items) - limit})" if len(items) > limit else ""))


def groups_table(analysis, model_name: str) -> Table:
    """The axis groups of a model, one row each (what `inspect` prints)."""
    table = Table(title=escape(f"axis groups of {model_name}"))
    for col in ("id", "size", "constraint", "why", "producers", "consumers", "weights"):
        table.add_column(col, overflow="fold")
    for g in analysis.groups:
        table.add_row(g.id, str(g.size), g.constraint + (f" (x{g.granularity})" if g.granularity > 1 else ""),
                      escape(g.reason or ""), _names(g.producers), _names(g.consumers), _names(g.weights))
    return table


def widen_table(result) -> Table:
    """What `widen` did: per group old → new and strategy, then parameters and the worst error."""
    rep = result.report
    err = "not verified" if rep is None else f"max abs error {fmt(rep.worst_abs)}, normalised {fmt(rep.worst_normalised)}"
    status = "exact" if result.exact else "APPROXIMATE"
    caption = f"parameters {result.params_before:,} -> {result.params_after:,}; {err} ({status})"
    if result.untied:
        caption += "\n" + untied_line(result.untied)
    table = Table(caption=escape(caption), caption_justify="left")
    for col in ("group", "producers", "size", "init", "note"):
        table.add_column(col, overflow="fold")
    for p in result.plans:
        table.add_row(p.group.id, _names(p.group.producers, 2), f"{p.group.size} -> {p.new_size}", p.init, escape(p.note or ""))
    for g, why in result.skipped:
        table.add_row(g.id, _names(g.producers, 2), f"{g.size} (kept)", "-", escape(f"skipped: {why}"))
    return table


def untied_line(untied) -> str:
    """`untied N shared weight(s): name (k copies), ...`: weights given a copy per class of readers."""
    names = ", ".join(f"{u.weight} ({len(u.copies)} copies)" for u in untied[:4])
    more = f", ... (+{len(untied) - 4})" if len(untied) > 4 else ""
    return (f"untied {len(untied)} shared weight{'s' if len(untied) != 1 else ''} that readers grow differently: "
            f"{names}{more}")


def blocks_table(blocks) -> Table:
    """Residual blocks that `deepen --block copy --after ID` can duplicate."""
    table = Table(title="residual blocks (deepen --block copy --after ID)")
    for col in ("id", "kind", "nodes", "copy is"):
        table.add_column(col, overflow="fold")
    for b in blocks:
        table.add_row(b.id, b.kind, f"{len(b.nodes)}: {_names(b.nodes, 3)}", "exact" if b.exact else "approximate")
    return table


def _group_cell(g) -> str:
    return "-" if g is None else f"{g.size} ({g.id}, {g.constraint})"


def transformer_table(layers, units: dict[str, str] | None = None) -> Table:
    """Per transformer layer: heads, head size, hidden and feed-forward sizes with the groups that grow them.

    `units` maps a layer's scores node to its blocks for `deepen --block copy --after` (e.g. b2-b3).
    """
    table = Table(title="transformer layers (widen --heads / --ffn / --hidden grow every layer; "
                        "deepen --block copy --after BLOCKS copies one, --after layers all)")
    for col in ("layer", "attention scores", "heads", "head size", "value size", "hidden", "feed-forward", "blocks"):
        table.add_column(col, overflow="fold")
    for layer in layers:
        table.add_row(str(layer.index), escape(layer.scores), _group_cell(layer.heads), str(layer.head_size),
                      _group_cell(layer.value_size), _group_cell(layer.hidden),
                      ", ".join(_group_cell(g) for g in layer.ffn) or "-", (units or {}).get(layer.scores, "-"))
    return table
