import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.gcd_03 import gcd_03
else:
    from python_programs.gcd_03 import gcd_03


testdata = load_json_testcases(gcd_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_gcd(input_data, expected):
    assert gcd_03(*input_data) == expected
