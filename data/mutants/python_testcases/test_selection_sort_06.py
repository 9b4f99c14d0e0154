import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.selection_sort_06 import selection_sort_06
else:
    from python_programs.selection_sort_06 import selection_sort_06


testdata = load_json_testcases(selection_sort_06.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_selection_sort(input_data, expected):
    assert selection_sort_06(*input_data) == expected
