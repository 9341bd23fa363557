"""Mutation findings (session 51) on ``--labels FILE.json``: its items are labels as a comma list's are, stripped
and non-blank, and an item that is no string is refused by name."""
import json

import pytest

from kizuna.apps.zeroshot import parse_labels


def test_a_json_labels_item_that_is_no_string_is_refused_by_name(tmp_path):
    """[1, 2] (class numbers, not words): a one-line message, not "'int' object has no attribute 'strip'"."""
    f = tmp_path / "labels.json"
    f.write_text(json.dumps(["a cat", 2]))
    with pytest.raises(ValueError, match=r"--labels .*labels\.json: labels must be strings"):
        parse_labels(str(f))


def test_json_labels_are_stripped_and_blank_ones_dropped(tmp_path):
    """" a dog " and "" in the list: the candidates are "a cat" and "a dog", as "a cat, a dog," on the command
    line gives (kept as written, a blank item was a candidate label of its own)."""
    f = tmp_path / "labels.json"
    f.write_text(json.dumps(["a cat", " a dog ", "", "  "]))
    assert parse_labels(str(f)) == ["a cat", "a dog"]


def test_an_upper_case_json_labels_file_is_read_as_json(tmp_path):
    """LABELS.JSON (a Windows export) is JSON too: its lines ("[", "\\"a cat\\",", ...) were the labels."""
    f = tmp_path / "LABELS.JSON"
    f.write_text(json.dumps(["a cat", "a dog"], indent=2))
    assert parse_labels(str(f)) == ["a cat", "a dog"]
