import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.merge_intervals import merge_intervals
else:
    from python_programs.merge_intervals import merge_intervals


testdata = load_json_testcases(merge_intervals.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_merge_intervals(input_data, expected):
    assert merge_intervals(*input_data) == expected
