import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.merge_sort_06 import merge_sort_06
else:
    from python_programs.merge_sort_06 import merge_sort_06


testdata = load_json_testcases(merge_sort_06.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_merge_sort(input_data, expected):
    assert merge_sort_06(*input_data) == expected
