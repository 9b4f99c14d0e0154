import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.lis_length_09 import lis_length_09
else:
    from python_programs.lis_length_09 import lis_length_09


testdata = load_json_testcases(lis_length_09.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_lis_length(input_data, expected):
    assert lis_length_09(*input_data) == expected
