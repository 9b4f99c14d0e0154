import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.flatten_03 import flatten_03
else:
    from python_programs.flatten_03 import flatten_03


testdata = load_json_testcases(flatten_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_flatten(input_data, expected):
    assert list(flatten_03(*input_data)) == expected
