import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.levenshtein_03 import levenshtein_03
else:
    from python_programs.levenshtein_03 import levenshtein_03


testdata = load_json_testcases(levenshtein_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_levenshtein(input_data, expected):
    assert levenshtein_03(*input_data) == expected
