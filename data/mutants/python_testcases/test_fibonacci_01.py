import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.fibonacci_01 import fibonacci_01
else:
    from python_programs.fibonacci_01 import fibonacci_01


testdata = load_json_testcases(fibonacci_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_fibonacci(input_data, expected):
    assert fibonacci_01(*input_data) == expected
