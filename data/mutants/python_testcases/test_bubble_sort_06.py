import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.bubble_sort_06 import bubble_sort_06
else:
    from python_programs.bubble_sort_06 import bubble_sort_06


testdata = load_json_testcases(bubble_sort_06.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_bubble_sort(input_data, expected):
    assert bubble_sort_06(*input_data) == expected
