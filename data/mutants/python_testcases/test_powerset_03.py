import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.powerset_03 import powerset_03
else:
    from python_programs.powerset_03 import powerset_03


testdata = load_json_testcases(powerset_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_powerset(input_data, expected):
    assert powerset_03(*input_data) == expected
