import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.balanced_brackets_01 import balanced_brackets_01
else:
    from python_programs.balanced_brackets_01 import balanced_brackets_01


testdata = load_json_testcases(balanced_brackets_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_balanced_brackets(input_data, expected):
    assert balanced_brackets_01(*input_data) == expected
