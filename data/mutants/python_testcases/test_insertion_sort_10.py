import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.insertion_sort_10 import insertion_sort_10
else:
    from python_programs.insertion_sort_10 import insertion_sort_10


testdata = load_json_testcases(insertion_sort_10.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_insertion_sort(input_data, expected):
    assert insertion_sort_10(*input_data) == expected
