import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.powerset_10 import powerset_10
else:
    from python_programs.powerset_10 import powerset_10


testdata = load_json_testcases(powerset_10.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_powerset(input_data, expected):
    assert powerset_10(*input_data) == expected
