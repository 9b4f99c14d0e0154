import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.lis_length_06 import lis_length_06
else:
    from python_programs.lis_length_06 import lis_length_06


testdata = load_json_testcases(lis_length_06.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_lis_length(input_data, expected):
    assert lis_length_06(*input_data) == expected
