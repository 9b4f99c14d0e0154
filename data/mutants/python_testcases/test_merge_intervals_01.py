import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.merge_intervals_01 import merge_intervals_01
else:
    from python_programs.merge_intervals_01 import merge_intervals_01


testdata = load_json_testcases(merge_intervals_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_merge_intervals(input_data, expected):
    assert merge_intervals_01(*input_data) == expected
