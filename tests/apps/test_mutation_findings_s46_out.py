"""Mutation testing of stop 46's check_out_outside_data: a hidden folder on the way from the data to --out is never
read as data, but only the part inside the data counts (a dataset kept under ~/.datasets is still checked)."""
import pytest

from kizuna.apps.common import check_out_outside_data


def test_a_hidden_folder_above_the_data_does_not_exempt_an_out_inside_it(tmp_path):
    data = tmp_path / ".datasets" / "imf"
    (data / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="--cache-dir .* is inside --dataset"):
        check_out_outside_data(data / "cache", "--dataset", str(data), "--cache-dir")
    check_out_outside_data(data / ".cache", "--dataset", str(data), "--cache-dir")  # hidden inside the data: fine
    check_out_outside_data(data / ".kizuna" / "eval", "--dataset", str(data))
