import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.counting_sort_07 import counting_sort_07
else:
    from python_programs.counting_sort_07 import counting_sort_07


testdata = load_json_testcases(counting_sort_07.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_counting_sort(input_data, expected):
    assert counting_sort_07(*input_data) == expected
