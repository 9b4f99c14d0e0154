import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.gcd_10 import gcd_10
else:
    from python_programs.gcd_10 import gcd_10


testdata = load_json_testcases(gcd_10.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_gcd(input_data, expected):
    assert gcd_10(*input_data) == expected
