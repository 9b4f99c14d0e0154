import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.longest_palindrome_02 import longest_palindrome_02
else:
    from python_programs.longest_palindrome_02 import longest_palindrome_02


testdata = load_json_testcases(longest_palindrome_02.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_longest_palindrome(input_data, expected):
    assert longest_palindrome_02(*input_data) == expected
