import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.fibonacci import fibonacci
else:
    from python_programs.fibonacci import fibonacci


testdata = load_json_testcases(fibonacci.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_fibonacci(input_data, expected):
    assert fibonacci(*input_data) == expected
