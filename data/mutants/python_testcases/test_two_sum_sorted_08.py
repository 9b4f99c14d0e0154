import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.two_sum_sorted_08 import two_sum_sorted_08
else:
    from python_programs.two_sum_sorted_08 import two_sum_sorted_08


testdata = load_json_testcases(two_sum_sorted_08.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_two_sum_sorted(input_data, expected):
    assert two_sum_sorted_08(*input_data) == expected
