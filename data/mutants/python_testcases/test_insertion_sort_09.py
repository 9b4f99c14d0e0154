import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.insertion_sort_09 import insertion_sort_09
else:
    from python_programs.insertion_sort_09 import insertion_sort_09


testdata = load_json_testcases(insertion_sort_09.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_insertion_sort(input_data, expected):
    assert insertion_sort_09(*input_data) == expected
