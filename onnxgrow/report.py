"""Human-readable rendering of results with rich (tables), kept apart from the API."""

from __future__ import annotations

import re

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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
    # against saved outputs or another runtime, the title says what was compared with what
    plain = (
        report.reference is None
        or report.candidate is None
        or (report.reference.endswith("(onnxruntime)") and report.candidate.endswith("(onnxruntime)"))
    )
    against = "" if plain else f"{report.candidate} against {report.reference}, "
    table = Table(
        title=escape(
            f"{title}: {'PASS' if report.passed else 'FAIL'} "
            f"({against}provider {report.provider}, {report.iterations} iteration(s), "
            f"seed {report.seed}" + (", rtol relative to each output's largest |value|)" if output else ")")
        )
    )
    for col in ("output", "shape", "max abs err", "err / max|ref|" if output else "max rel err", "atol/rtol", "result"):
        table.add_column(col)
    for o in report.outputs:
        result = "pass" if o.passed else f"FAIL ({o.reason})"
        table.add_row(
            escape(o.name),
            "x".join(map(str, o.shape)) or "scalar",
            fmt(o.max_abs),
            fmt(o.normalised if output else o.max_rel),
            f"{o.atol:g}/{o.rtol:g}",
            result,
        )
    return table


def console(stderr: bool = False) -> Console:
    """A console that does not wrap or colour when it is not a terminal (tests, CI, pipes)."""
    return _Console(stderr=stderr, width=120 if not _tty(stderr) else None, highlight=False, soft_wrap=True)


def _tty(stderr: bool) -> bool:
    import sys

    return (sys.stderr if stderr else sys.stdout).isatty()


def _escape(text: str) -> str:
    """rich's `escape`, skipped for text it leaves alone (no "[" and no backslash): most names and notes."""
    return escape(text) if "[" in text or "\\" in text else text


def _names(items: list[str], limit: int = 4) -> str:
    return _escape(", ".join(items[:limit]) + (f" … (+{len(items) - limit})" if len(items) > limit else ""))


def groups_table(analysis, model_name: str) -> Table:
    """The axis groups of a model, one row each (what `inspect` prints)."""
    table = Table(title=escape(f"axis groups of {model_name}"))
    for col in ("id", "size", "constraint", "why", "producers", "consumers", "weights"):
        table.add_column(col, overflow="fold")
    for g in analysis.groups:
        table.add_row(
            g.id,
            str(g.size),
            g.constraint + (f" (x{g.granularity})" if g.granularity > 1 else ""),
            _escape(g.reason or ""),
            _names(g.producers),
            _names(g.consumers),
            _names(g.weights),
        )
    return table


def widen_table(result) -> Table:
    """What `widen` did: per group old → new and strategy, then parameters and the worst error."""
    rep = result.report
    err = (
        "not verified" if rep is None else f"max abs error {fmt(rep.worst_abs)}, normalised {fmt(rep.worst_normalised)}"
    )
    status = "exact" if result.exact else "APPROXIMATE"
    caption = f"parameters {result.params_before:,} -> {result.params_after:,}; {err} ({status})"
    if result.untied:
        caption += "\n" + untied_line(result.untied)
    table = Table(caption=escape(caption), caption_justify="left")
    for col in ("group", "producers", "size", "init", "note"):
        table.add_column(col, overflow="fold")
    for p in result.plans:
        table.add_row(
            p.group.id, _names(p.group.producers, 2), f"{p.group.size} -> {p.new_size}", p.init, escape(p.note or "")
        )
    for g, why in result.skipped:
        table.add_row(g.id, _names(g.producers, 2), f"{g.size} (kept)", "-", escape(f"skipped: {why}"))
    return table


def untied_line(untied) -> str:
    """`untied N shared weight(s): name (k copies), ...`: weights given a copy per class of readers."""
    names = ", ".join(f"{u.weight} ({len(u.copies)} copies)" for u in untied[:4])
    more = f", ... (+{len(untied) - 4})" if len(untied) > 4 else ""
    return (
        f"untied {len(untied)} shared weight{'s' if len(untied) != 1 else ''} that readers grow differently: "
        f"{names}{more}"
    )


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
    table = Table(
        title="transformer layers (widen --heads / --ffn / --hidden grow every layer; "
        "deepen --block copy --after BLOCKS copies one, --after layers all)"
    )
    for col in ("layer", "attention scores", "heads", "head size", "value size", "hidden", "feed-forward", "blocks"):
        table.add_column(col, overflow="fold")
    for layer in layers:
        table.add_row(
            str(layer.index),
            _escape(layer.scores),
            _group_cell(layer.heads),
            str(layer.head_size),
            _group_cell(layer.value_size),
            _group_cell(layer.hidden),
            ", ".join(_group_cell(g) for g in layer.ffn) or "-",
            (units or {}).get(layer.scores, "-"),
        )
    return table


# -- a fast path for plain tables ------------------------------------------------------------------------------
# rich spends about 0.3 ms per table cell (measuring, wrapping and cropping through its generic renderables):
# `inspect` of a 768-layer encoder prints 3,840 groups and spent most of its time there. When the console
# has no colours (not a terminal) and the table uses only what onnxgrow's tables use, the same characters
# are produced here from rich's own pieces (its wrapping, box characters and width arithmetic).


def _plain(console: Console, text: object) -> str:
    """A cell, header, title or caption as the characters rich prints for it (markup rendered, no styles)."""
    if isinstance(text, Text):
        return text.plain
    text = str(text)
    return text if "[" not in text else console.render_str(text, highlight=False).plain


#: characters one terminal cell wide and, but for the space, not whitespace: printable ASCII and the "…" of
#: `_names`. Text made of these is measured by len() and wrapped by `_divide` without rich's per-character work.
_NARROW = frozenset(map(chr, range(0x20, 0x7F))) | {"…"}
_narrow = _NARROW.issuperset
#: a word as rich's line division sees one in narrow text: leading spaces (first word only), the word, its spaces
_WORD = re.compile(r"( *[^ ]+) *")


def _cells(text: str) -> int:
    from rich.cells import cell_len

    return len(text) if _narrow(text) else cell_len(text)


def _longest(plain: str) -> int:
    """The widest line of a cell's text, in terminal cells."""
    if _narrow(plain):  # one line ("\n" is not narrow)
        return len(plain)
    return max((_cells(line) for line in plain.splitlines()), default=0)


def _column_max(longest: int, limit: int) -> int:
    """rich's width of a column (the maximum of Measurement.get of each Padding(Text(cell), (0, 1))) within
    `limit` columns, from the widest line of its cells."""
    if limit < 3:
        return max(limit, 0)
    return min(longest + 2, limit)


def _divide(text: str, width: int) -> list[int]:
    """Where rich's `divide_line(text, width, fold=True)` breaks narrow text: a word goes on the line when it fits
    (its trailing spaces may run past the width), else starts a new line, and one longer than `width` is cut
    into pieces `width` long (the last piece's length is where the next word starts counting)."""
    breaks: list[int] = []
    offset = 0  # cells used on the current line
    for word in _WORD.finditer(text):
        start, end = word.span()
        length = word.end(1) - start  # without its trailing spaces
        if width - offset >= length:
            offset += end - start
        elif length > width:
            breaks.extend(range(start or width, end, width))
            offset = (end - start - 1) % width + 1
        elif offset and start:
            breaks.append(start)
            offset = end - start
    return breaks


def _wrap(console: Console, plain: str, width: int) -> list[str]:
    """The lines of a cell `width` wide (padding included), as rich's Padding(Text) with overflow fold draws them."""
    inner = width - 2
    if _narrow(plain):
        if len(plain) <= inner:
            return [" " + plain.ljust(width - 1)]
        # Text.wrap of one line of narrow text: rich's line division, each line cropped to the width (rich drops
        # trailing blanks past the width, then crops) and padded
        starts = _divide(plain, inner)
        return [
            " " + plain[a : min(b, a + inner)].ljust(width - 1) for a, b in zip([0, *starts], [*starts, len(plain)])
        ]
    from rich.text import Text

    lines = [line.plain for line in Text(plain).wrap(console, inner, justify="left", overflow="fold")]
    return [" " + line + " " * (inner - _cells(line)) + " " for line in lines]


def _column_lines(console: Console, cells: list[str], width: int) -> list[list[str]]:
    """`_wrap` of each of a column's cells; a text repeated in the column (sizes, constraints) is wrapped once."""
    done: dict[str, list[str]] = {}
    out = []
    for cell in cells:
        lines = done.get(cell)
        if lines is None:
            lines = done[cell] = _wrap(console, cell, width)
        out.append(lines)
    return out


def _unsupported(console: Console, table: Table) -> bool:
    """Whether the table or console uses something `plain_table` does not reproduce."""
    from rich import box

    if (
        console.color_system is not None
        or console.legacy_windows
        or not console.encoding.lower().startswith("utf")
        or not console.soft_wrap
        or table.box is not box.HEAVY_HEAD
        or not table.show_header
        or table.show_footer
        or not table.show_edge
        or not table.pad_edge
        or table.padding != (0, 1, 0, 1)
        or table.expand
        or table.width is not None
        or table.min_width is not None
        or table.collapse_padding
        or table.show_lines
        or table.leading
        or table.row_styles
        or table.safe_box is False
        or any(row.end_section or row.style for row in table.rows)
        or not isinstance(table.title or "", str)
        or not isinstance(table.caption or "", str)
    ):
        return True
    return any(
        col.overflow != "fold"
        or col.no_wrap
        or col.width is not None
        or col.min_width is not None
        or col.max_width is not None
        or col.justify != "left"
        or col.vertical != "top"
        or col.ratio
        or not isinstance(col.header, str)
        or any(not isinstance(c, str) for c in col._cells)
        for col in table.columns
    )


def _widths(console: Console, cells: list[list[str]]) -> list[int]:
    """The columns' widths as rich's Table._calculate_column_widths finds them for these (plain) cells."""
    from rich._ratio import ratio_reduce

    longest = [max(map(_longest, set(col))) for col in cells]  # a column's cells include its header
    limit = console.width - (2 + len(cells) - 1)
    widths = [_column_max(n, limit) or 1 for n in longest]
    if sum(widths) > limit:
        widths = Table._collapse_widths(widths, [True] * len(widths), limit)
        if sum(widths) > limit:
            widths = ratio_reduce(sum(widths) - limit, [1] * len(widths), widths, widths)
        widths = [_column_max(n, w) for n, w in zip(longest, widths)]
    return widths


def plain_table(console: Console, table: Table) -> str | None:
    """What `console.print(table)` writes, or None when the table or console is not one this reproduces."""
    from rich import box

    if _unsupported(console, table):
        return None
    cells = [[_plain(console, col.header)] + [_plain(console, c) for c in col._cells] for col in table.columns]
    widths = _widths(console, cells)
    if min(widths) < 3:
        return None
    hb = box.HEAVY_HEAD
    out: list[str] = []
    if table.title:
        out.append(_plain(console, table.title) + "\n")
    out.append(hb.get_top(widths) + "\n")
    columns = [_column_lines(console, col, w) for col, w in zip(cells, widths)]
    blanks = [" " * w for w in widths]
    rows = list(zip(*columns))
    # the header row is aligned to the bottom
    header = rows[0]
    height = max(map(len, header))
    for i in range(height):
        line = hb.head_vertical.join(
            [c[i - height + len(c)] if i >= height - len(c) else b for c, b in zip(header, blanks)]
        )
        out.append(hb.head_left + line + hb.head_right + "\n")
    out.append(hb.get_row(widths, "head", edge=True) + "\n")
    for r, row in enumerate(rows[1:], 2):
        left, right, div = (
            (hb.foot_left, hb.foot_right + "\n", hb.foot_vertical)
            if r == len(rows)
            else (hb.mid_left, hb.mid_right + "\n", hb.mid_vertical)
        )
        height = max(map(len, row))
        if height == 1:
            out.append(left + div.join([c[0] for c in row]) + right)
            continue
        for i in range(height):
            out.append(left + div.join([c[i] if i < len(c) else b for c, b in zip(row, blanks)]) + right)
    out.append(hb.get_bottom(widths) + "\n")
    if table.caption:
        out.append(_plain(console, table.caption) + "\n")
    return "".join(out)


def _rich_major() -> int:
    from importlib.metadata import version

    try:
        return int(version("rich").split(".")[0])
    except Exception:  # noqa: BLE001 - no metadata: take the safe path
        return 0


#: the fast path reads rich internals checked against rich 15 (tests/test_report.py); other versions draw with rich
_FAST_RICH = _rich_major() == 15


class _Console(Console):
    """rich's Console, printing a plain table through `plain_table` when it can (same output, faster)."""

    def print(self, *objects, **kwargs) -> None:  # type: ignore[override]
        if len(objects) == 1 and not kwargs and isinstance(objects[0], Table) and _FAST_RICH:
            try:
                text = plain_table(self, objects[0])
            except (ImportError, AttributeError, TypeError, ValueError):  # rich's internals moved: rich draws it
                text = None
            if text is not None:
                self.file.write(text)
                self.file.flush()
                return
        super().print(*objects, **kwargs)
