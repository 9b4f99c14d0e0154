import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.merge_intervals_02 import merge_intervals_02
else:
    from python_programs.merge_intervals_02 import merge_intervals_02


testdata = load_json_testcases(merge_intervals_02.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_merge_intervals(input_data, expected):
    assert merge_intervals_02(*input_data) == expected
