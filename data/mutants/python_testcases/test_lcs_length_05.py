import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.lcs_length_05 import lcs_length_05
else:
    from python_programs.lcs_length_05 import lcs_length_05


testdata = load_json_testcases(lcs_length_05.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_lcs_length(input_data, expected):
    assert lcs_length_05(*input_data) == expected
