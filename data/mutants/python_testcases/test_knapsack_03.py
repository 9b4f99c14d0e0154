import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.knapsack_03 import knapsack_03
else:
    from python_programs.knapsack_03 import knapsack_03


testdata = load_json_testcases(knapsack_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_knapsack(input_data, expected):
    assert knapsack_03(*input_data) == expected
