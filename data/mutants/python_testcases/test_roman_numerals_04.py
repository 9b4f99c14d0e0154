import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.roman_numerals_04 import roman_numerals_04
else:
    from python_programs.roman_numerals_04 import roman_numerals_04


testdata = load_json_testcases(roman_numerals_04.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_roman_numerals(input_data, expected):
    assert roman_numerals_04(*input_data) == expected
