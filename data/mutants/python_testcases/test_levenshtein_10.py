import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.levenshtein_10 import levenshtein_10
else:
    from python_programs.levenshtein_10 import levenshtein_10


testdata = load_json_testcases(levenshtein_10.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_levenshtein(input_data, expected):
    assert levenshtein_10(*input_data) == expected
