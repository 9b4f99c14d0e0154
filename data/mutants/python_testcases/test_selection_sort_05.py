import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.selection_sort_05 import selection_sort_05
else:
    from python_programs.selection_sort_05 import selection_sort_05


testdata = load_json_testcases(selection_sort_05.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_selection_sort(input_data, expected):
    assert selection_sort_05(*input_data) == expected
