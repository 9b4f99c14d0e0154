import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.bitcount_03 import bitcount_03
else:
    from python_programs.bitcount_03 import bitcount_03


testdata = load_json_testcases(bitcount_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_bitcount(input_data, expected):
    assert bitcount_03(*input_data) == expected
