import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.knapsack_05 import knapsack_05
else:
    from python_programs.knapsack_05 import knapsack_05


testdata = load_json_testcases(knapsack_05.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_knapsack(input_data, expected):
    assert knapsack_05(*input_data) == expected
