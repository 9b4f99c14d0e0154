import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.kth_smallest_01 import kth_smallest_01
else:
    from python_programs.kth_smallest_01 import kth_smallest_01


testdata = load_json_testcases(kth_smallest_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_kth_smallest(input_data, expected):
    assert kth_smallest_01(*input_data) == expected
