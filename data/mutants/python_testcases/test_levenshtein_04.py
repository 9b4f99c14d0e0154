import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.levenshtein_04 import levenshtein_04
else:
    from python_programs.levenshtein_04 import levenshtein_04


testdata = load_json_testcases(levenshtein_04.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_levenshtein(input_data, expected):
    assert levenshtein_04(*input_data) == expected
