import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.flatten_04 import flatten_04
else:
    from python_programs.flatten_04 import flatten_04


testdata = load_json_testcases(flatten_04.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_flatten(input_data, expected):
    assert list(flatten_04(*input_data)) == expected
