import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.powerset_07 import powerset_07
else:
    from python_programs.powerset_07 import powerset_07


testdata = load_json_testcases(powerset_07.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_powerset(input_data, expected):
    assert powerset_07(*input_data) == expected
