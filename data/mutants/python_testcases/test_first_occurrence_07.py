import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.first_occurrence_07 import first_occurrence_07
else:
    from python_programs.first_occurrence_07 import first_occurrence_07


testdata = load_json_testcases(first_occurrence_07.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_first_occurrence(input_data, expected):
    assert first_occurrence_07(*input_data) == expected
