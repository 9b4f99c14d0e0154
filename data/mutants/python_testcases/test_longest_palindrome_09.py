import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.longest_palindrome_09 import longest_palindrome_09
else:
    from python_programs.longest_palindrome_09 import longest_palindrome_09


testdata = load_json_testcases(longest_palindrome_09.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_longest_palindrome(input_data, expected):
    assert longest_palindrome_09(*input_data) == expected
