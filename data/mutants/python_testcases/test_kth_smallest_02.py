import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.kth_smallest_02 import kth_smallest_02
else:
    from python_programs.kth_smallest_02 import kth_smallest_02


testdata = load_json_testcases(kth_smallest_02.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_kth_smallest(input_data, expected):
    assert kth_smallest_02(*input_data) == expected
