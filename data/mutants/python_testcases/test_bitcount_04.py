import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.bitcount_04 import bitcount_04
else:
    from python_programs.bitcount_04 import bitcount_04


testdata = load_json_testcases(bitcount_04.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_bitcount(input_data, expected):
    assert bitcount_04(*input_data) == expected
