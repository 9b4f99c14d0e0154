import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.balanced_brackets_06 import balanced_brackets_06
else:
    from python_programs.balanced_brackets_06 import balanced_brackets_06


testdata = load_json_testcases(balanced_brackets_06.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_balanced_brackets(input_data, expected):
    assert balanced_brackets_06(*input_data) == expected
