import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.gcd_01 import gcd_01
else:
    from python_programs.gcd_01 import gcd_01


testdata = load_json_testcases(gcd_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_gcd(input_data, expected):
    assert gcd_01(*input_data) == expected
