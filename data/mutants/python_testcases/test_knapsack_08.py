import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.knapsack_08 import knapsack_08
else:
    from python_programs.knapsack_08 import knapsack_08


testdata = load_json_testcases(knapsack_08.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_knapsack(input_data, expected):
    assert knapsack_08(*input_data) == expected
