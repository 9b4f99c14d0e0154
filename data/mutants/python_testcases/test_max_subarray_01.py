import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.max_subarray_01 import max_subarray_01
else:
    from python_programs.max_subarray_01 import max_subarray_01


testdata = load_json_testcases(max_subarray_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_max_subarray(input_data, expected):
    assert max_subarray_01(*input_data) == expected
