import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.levenshtein_09 import levenshtein_09
else:
    from python_programs.levenshtein_09 import levenshtein_09


testdata = load_json_testcases(levenshtein_09.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_levenshtein(input_data, expected):
    assert levenshtein_09(*input_data) == expected
