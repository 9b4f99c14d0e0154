import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.flatten_06 import flatten_06
else:
    from python_programs.flatten_06 import flatten_06


testdata = load_json_testcases(flatten_06.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_flatten(input_data, expected):
    assert list(flatten_06(*input_data)) == expected
