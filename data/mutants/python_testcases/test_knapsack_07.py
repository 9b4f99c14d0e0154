import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.knapsack_07 import knapsack_07
else:
    from python_programs.knapsack_07 import knapsack_07


testdata = load_json_testcases(knapsack_07.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_knapsack(input_data, expected):
    assert knapsack_07(*input_data) == expected
