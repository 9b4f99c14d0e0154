import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.levenshtein_07 import levenshtein_07
else:
    from python_programs.levenshtein_07 import levenshtein_07


testdata = load_json_testcases(levenshtein_07.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_levenshtein(input_data, expected):
    assert levenshtein_07(*input_data) == expected
