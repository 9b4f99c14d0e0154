import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.levenshtein_01 import levenshtein_01
else:
    from python_programs.levenshtein_01 import levenshtein_01


testdata = load_json_testcases(levenshtein_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_levenshtein(input_data, expected):
    assert levenshtein_01(*input_data) == expected
