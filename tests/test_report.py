"""The fast rendering of plain tables (report.plain_table) writes exactly what rich writes for the same table."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from onnxgrow.analysis.blocks import find_blocks
from onnxgrow.analysis.transformer import layers as transformer_layers
from onnxgrow.report import blocks_table, console, groups_table, plain_table, transformer_table
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
