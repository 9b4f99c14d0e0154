import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.levenshtein_05 import levenshtein_05
else:
    from python_programs.levenshtein_05 import levenshtein_05


testdata = load_json_testcases(levenshtein_05.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_levenshtein(input_data, expected):
    assert levenshtein_05(*input_data) == expected
