import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.roman_numerals_07 import roman_numerals_07
else:
    from python_programs.roman_numerals_07 import roman_numerals_07


testdata = load_json_testcases(roman_numerals_07.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_roman_numerals(input_data, expected):
    assert roman_numerals_07(*input_data) == expected
