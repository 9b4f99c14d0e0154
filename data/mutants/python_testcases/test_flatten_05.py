import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.flatten_05 import flatten_05
else:
    from python_programs.flatten_05 import flatten_05


testdata = load_json_testcases(flatten_05.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_flatten(input_data, expected):
    assert list(flatten_05(*input_data)) == expected
