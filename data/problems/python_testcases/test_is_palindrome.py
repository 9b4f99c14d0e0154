import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.is_palindrome import is_palindrome
else:
    from python_programs.is_palindrome import is_palindrome


testdata = load_json_testcases(is_palindrome.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_is_palindrome(input_data, expected):
    assert is_palindrome(*input_data) == expected
