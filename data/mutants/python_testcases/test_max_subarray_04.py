import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.max_subarray_04 import max_subarray_04
else:
    from python_programs.max_subarray_04 import max_subarray_04


testdata = load_json_testcases(max_subarray_04.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_max_subarray(input_data, expected):
    assert max_subarray_04(*input_data) == expected
