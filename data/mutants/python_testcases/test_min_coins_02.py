import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.min_coins_02 import min_coins_02
else:
    from python_programs.min_coins_02 import min_coins_02


testdata = load_json_testcases(min_coins_02.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_min_coins(input_data, expected):
    assert min_coins_02(*input_data) == expected
