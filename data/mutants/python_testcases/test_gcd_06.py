import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.gcd_06 import gcd_06
else:
    from python_programs.gcd_06 import gcd_06


testdata = load_json_testcases(gcd_06.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_gcd(input_data, expected):
    assert gcd_06(*input_data) == expected
