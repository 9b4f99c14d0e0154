import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.roman_numerals import roman_numerals
else:
    from python_programs.roman_numerals import roman_numerals


testdata = load_json_testcases(roman_numerals.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_roman_numerals(input_data, expected):
    assert roman_numerals(*input_data) == expected
