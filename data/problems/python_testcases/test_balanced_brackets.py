import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.balanced_brackets import balanced_brackets
else:
    from python_programs.balanced_brackets import balanced_brackets


testdata = load_json_testcases(balanced_brackets.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_balanced_brackets(input_data, expected):
    assert balanced_brackets(*input_data) == expected
