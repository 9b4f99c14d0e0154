import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.knapsack_01 import knapsack_01
else:
    from python_programs.knapsack_01 import knapsack_01


testdata = load_json_testcases(knapsack_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_knapsack(input_data, expected):
    assert knapsack_01(*input_data) == expected
