import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.levenshtein_02 import levenshtein_02
else:
    from python_programs.levenshtein_02 import levenshtein_02


testdata = load_json_testcases(levenshtein_02.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_levenshtein(input_data, expected):
    assert levenshtein_02(*input_data) == expected
