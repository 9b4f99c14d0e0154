import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.is_palindrome_03 import is_palindrome_03
else:
    from python_programs.is_palindrome_03 import is_palindrome_03


testdata = load_json_testcases(is_palindrome_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_is_palindrome(input_data, expected):
    assert is_palindrome_03(*input_data) == expected
