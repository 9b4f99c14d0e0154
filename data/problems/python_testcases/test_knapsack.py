import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.knapsack import knapsack
else:
    from python_programs.knapsack import knapsack


testdata = load_json_testcases(knapsack.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_knapsack(input_data, expected):
    assert knapsack(*input_data) == expected
