import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.gcd_04 import gcd_04
else:
    from python_programs.gcd_04 import gcd_04


testdata = load_json_testcases(gcd_04.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_gcd(input_data, expected):
    assert gcd_04(*input_data) == expected
