import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.max_subarray_03 import max_subarray_03
else:
    from python_programs.max_subarray_03 import max_subarray_03


testdata = load_json_testcases(max_subarray_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_max_subarray(input_data, expected):
    assert max_subarray_03(*input_data) == expected
