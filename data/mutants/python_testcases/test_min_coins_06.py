import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.min_coins_06 import min_coins_06
else:
    from python_programs.min_coins_06 import min_coins_06


testdata = load_json_testcases(min_coins_06.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_min_coins(input_data, expected):
    assert min_coins_06(*input_data) == expected
