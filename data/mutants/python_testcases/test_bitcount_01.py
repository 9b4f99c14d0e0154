import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.bitcount_01 import bitcount_01
else:
    from python_programs.bitcount_01 import bitcount_01


testdata = load_json_testcases(bitcount_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_bitcount(input_data, expected):
    assert bitcount_01(*input_data) == expected
