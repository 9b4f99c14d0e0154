import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.knapsack_10 import knapsack_10
else:
    from python_programs.knapsack_10 import knapsack_10


testdata = load_json_testcases(knapsack_10.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_knapsack(input_data, expected):
    assert knapsack_10(*input_data) == expected
