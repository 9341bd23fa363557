"""Session 54 mutation findings: what shown_line escapes (apps/common.py _CONTROLS) and where data's names are said
(data/sources.py _where)."""
from kizuna.apps.common import one_line, shown_line, table_cell
from kizuna.data.sources import _where


def test_shown_line_escapes_every_control_character_but_the_tab():
    """Kills: _CONTROLS built from 0x80 (DEL, 0x7f, left raw), from 0x01 (NUL left raw), or without U+2028/U+2029
    (str.splitlines breaks there: one name shown as two lines)."""
    assert shown_line("a\x7fb") == "a\\x7fb"
    assert shown_line("a\x00b") == "a\\x00b"
    assert shown_line("a\u2028b\u2029c") == "a\\u2028b\\u2029c"
    assert shown_line("a\x85b\x9bc") == "a\\x85b\\x9bc"  # (C1: NEL and CSI)
    assert shown_line("tab\there") == "tab\there"
    assert one_line("a\x7fb\x00") == "a\x7fb\x00"  # (a file's rows keep them)
    assert table_cell("a\x1b[2Jb\tc") == "a\\x1b[2Jb\\tc"


def test_where_a_sample_is_said_escapes_its_names_for_every_kind_of_source():
    """Kills: _where's shown_line dropped for a tar shard's key or a folder's file (an ESC in a member or file name
    drove the terminal the skip report was printed to)."""
    for kind in ("tar", "csv", "folder"):
        said = _where(kind, "bad\x1b]0;T\x07name", "src\nx")
        assert "\x1b" not in said and "\x07" not in said and "\n" not in said, (kind, said)
        assert "bad\\x1b]0;T\\x07name" in said and "src\\nx" in said
