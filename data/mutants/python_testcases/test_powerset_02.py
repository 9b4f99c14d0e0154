import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.powerset_02 import powerset_02
else:
    from python_programs.powerset_02 import powerset_02


testdata = load_json_testcases(powerset_02.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_powerset(input_data, expected):
    assert powerset_02(*input_data) == expected
