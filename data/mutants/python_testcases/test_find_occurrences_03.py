import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.find_occurrences_03 import find_occurrences_03
else:
    from python_programs.find_occurrences_03 import find_occurrences_03


testdata = load_json_testcases(find_occurrences_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_find_occurrences(input_data, expected):
    assert find_occurrences_03(*input_data) == expected
