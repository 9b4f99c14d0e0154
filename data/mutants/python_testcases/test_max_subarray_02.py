import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.max_subarray_02 import max_subarray_02
else:
    from python_programs.max_subarray_02 import max_subarray_02


testdata = load_json_testcases(max_subarray_02.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_max_subarray(input_data, expected):
    assert max_subarray_02(*input_data) == expected
