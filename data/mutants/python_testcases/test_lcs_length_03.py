import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.lcs_length_03 import lcs_length_03
else:
    from python_programs.lcs_length_03 import lcs_length_03


testdata = load_json_testcases(lcs_length_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_lcs_length(input_data, expected):
    assert lcs_length_03(*input_data) == expected
