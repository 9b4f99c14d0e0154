import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.sqrt_newton_05 import sqrt_newton_05
else:
    from python_programs.sqrt_newton_05 import sqrt_newton_05


testdata = load_json_testcases(sqrt_newton_05.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_sqrt_newton(input_data, expected):
    assert sqrt_newton_05(*input_data) == pytest.approx(expected, abs=1e-6)
