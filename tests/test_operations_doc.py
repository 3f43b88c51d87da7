"""docs/OPERATIONS.md's options table is the one ``cosfs.options`` generates, so the
documentation cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

from cosfs.options import option_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "OPERATIONS.md"
BEGIN, END = "<!-- options:begin -->", "<!-- options:end -->"


def test_options_table_matches_the_code():
    text = DOC.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == option_table(), (
        "docs/OPERATIONS.md's options table is stale: replace the lines between the "
        "markers with the output of: python -c 'from cosfs.options import "
        "option_table; print(option_table())'")


def test_every_subcommand_and_file_the_doc_names_exists():
    text = DOC.read_text()
    root = DOC.parent.parent
    assert (root / "docs" / "systemd" / "cosfs@.service").is_file()
    for command in ("cosfs status", "cosfs unmount", "cosfs install-helper"):
        assert command in text
