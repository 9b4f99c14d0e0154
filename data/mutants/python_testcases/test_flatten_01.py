import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.flatten_01 import flatten_01
else:
    from python_programs.flatten_01 import flatten_01


testdata = load_json_testcases(flatten_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_flatten(input_data, expected):
    assert list(flatten_01(*input_data)) == expected
