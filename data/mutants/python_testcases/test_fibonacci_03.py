import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.fibonacci_03 import fibonacci_03
else:
    from python_programs.fibonacci_03 import fibonacci_03


testdata = load_json_testcases(fibonacci_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_fibonacci(input_data, expected):
    assert fibonacci_03(*input_data) == expected
