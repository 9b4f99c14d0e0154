import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.lis_length_07 import lis_length_07
else:
    from python_programs.lis_length_07 import lis_length_07


testdata = load_json_testcases(lis_length_07.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_lis_length(input_data, expected):
    assert lis_length_07(*input_data) == expected
