"""The fast rendering of plain tables (report.plain_table) writes exactly what rich writes for the same table."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich._wrap import divide_line
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from onnxgrow.analysis.blocks import find_blocks
from onnxgrow.analysis.transformer import layers as transformer_layers
from onnxgrow.report import _divide, _wrap, blocks_table, console, groups_table, plain_table, transformer_table
from onnxgrow.widen import inspect_model

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "a",
    "bb",
    "l0.q.mm,",
    "contracts",
    "this",
    "axis",
    "x" * 30,
    "…",
    "(+3)",
    "",
    "y" * 130,
    "[x]",
    "é",
    "中文",
    "tab\there",
    "two\nlines",
    "l11.ffn2.mm",
]


def _rich(table: Table, width: int) -> tuple[str, Console]:
    buf = io.StringIO()
    con = Console(file=buf, width=width, highlight=False, soft_wrap=True)
    Console.print(con, table)
    return buf.getvalue(), con


def _random_table(rng: random.Random) -> Table:
    ncol = rng.randint(1, 8)
    table = Table(
        title=rng.choice([None, "title", escape("a [b] c"), "long " * 40]),
        caption=rng.choice([None, "caption\nline 2", "c"]),
        caption_justify="left",
    )
    for _ in range(ncol):
        table.add_column(rng.choice(["id", "size", "a long header name", "x"]), overflow="fold")
    for _ in range(rng.randint(0, 6)):
        table.add_row(*[escape(" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12)))) for _ in range(ncol)])
    return table


def test_random_tables_render_as_rich_does():
    rng = random.Random(17)
    compared = 0
    for _ in range(300):
        table = _random_table(rng)
        ref, con = _rich(table, rng.choice([120, 120, 60, 30, 200]))
        got = plain_table(con, table)
        if got is not None:  # a column narrower than 3 cells is left to rich
            assert got == ref
            compared += 1
    assert compared > 250


@pytest.mark.parametrize("model", ["encoder.onnx", "gpt.onnx", "cnn.onnx"])
def test_inspect_tables_render_as_rich_does(model):
    path = str(ROOT / "models" / model)
    analysis = inspect_model(path)
    for table in (
        groups_table(analysis, path),
        blocks_table(find_blocks(analysis.model)),
        transformer_table(transformer_layers(analysis)),
    ):
        ref, con = _rich(table, 120)
        assert plain_table(con, table) == ref


def test_console_uses_the_fast_path_only_without_a_terminal(capsys):
    table = Table(title="t")
    table.add_column("id", overflow="fold")
    table.add_row("g0")
    console().print(table)
    ref, _ = _rich(table, 120)
    assert capsys.readouterr().out == ref
    styled = Table(title="t", row_styles=["dim"])  # something plain_table does not reproduce
    styled.add_column("id", overflow="fold")
    styled.add_row("g0")
    assert plain_table(_rich(styled, 120)[1], styled) is None


# -- the narrow-text wrap (report._divide / report._wrap) is rich's line division, character for character ---------
# runs of spaces (leading, trailing, between words) and words of any length, some longer than the width
NARROW = st.lists(
    st.one_of(
        st.text(st.sampled_from([chr(c) for c in range(0x21, 0x7F)] + ["…"]), min_size=1, max_size=30),
        st.text(" ", min_size=1, max_size=5),
    ),
    max_size=12,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(NARROW, st.integers(1, 25))
def test_divide_is_richs_divide_line(text, width):
    assert _divide(text, width) == divide_line(text, width, fold=True)


@settings(max_examples=400, deadline=None)
@given(NARROW, st.integers(3, 27))
def test_wrap_is_richs_text_wrap(text, width):
    con = Console(file=io.StringIO(), width=120, highlight=False, soft_wrap=True)
    lines = Text(text).wrap(con, width - 2, justify="left", overflow="fold")
    assert _wrap(con, text, width) == [" " + line.plain + " " for line in lines]


def test_table_with_long_repeated_and_unicode_cells_renders_as_rich_does():
    rng = random.Random(3)
    words = ["l0.q.mm,", "x" * 50, "…", "(+12)", "é", "中文", "free", "  ", "blocked", "a b  c   d"]
    for width in (120, 80, 50):
        table = Table(title="t " * 70)
        for col in ("id", "size", "constraint", "producers", "weights"):
            table.add_column(col, overflow="fold")
        for r in range(60):
            table.add_row(
                f"g{r}",
                "64",  # repeated: wrapped once per column
                rng.choice(["free", "blocked (x4)", "   spaced  "]),
                " ".join(rng.choice(words) for _ in range(rng.randint(0, 15))),
                rng.choice(["w" * 140, "a … (+3)", "中文 " * 20, ""]),
            )
        ref, con = _rich(table, width)
        assert plain_table(con, table) == ref
