import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.bitcount_09 import bitcount_09
else:
    from python_programs.bitcount_09 import bitcount_09


testdata = load_json_testcases(bitcount_09.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_bitcount(input_data, expected):
    assert bitcount_09(*input_data) == expected
