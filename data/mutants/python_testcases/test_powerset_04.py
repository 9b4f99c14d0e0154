import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.powerset_04 import powerset_04
else:
    from python_programs.powerset_04 import powerset_04


testdata = load_json_testcases(powerset_04.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_powerset(input_data, expected):
    assert powerset_04(*input_data) == expected
