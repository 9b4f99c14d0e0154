import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.roman_numerals_10 import roman_numerals_10
else:
    from python_programs.roman_numerals_10 import roman_numerals_10


testdata = load_json_testcases(roman_numerals_10.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_roman_numerals(input_data, expected):
    assert roman_numerals_10(*input_data) == expected
