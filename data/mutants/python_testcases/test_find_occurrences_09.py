import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.find_occurrences_09 import find_occurrences_09
else:
    from python_programs.find_occurrences_09 import find_occurrences_09


testdata = load_json_testcases(find_occurrences_09.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_find_occurrences(input_data, expected):
    assert find_occurrences_09(*input_data) == expected
