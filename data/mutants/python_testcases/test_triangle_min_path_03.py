import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.triangle_min_path_03 import triangle_min_path_03
else:
    from python_programs.triangle_min_path_03 import triangle_min_path_03


testdata = load_json_testcases(triangle_min_path_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_triangle_min_path(input_data, expected):
    assert triangle_min_path_03(*input_data) == expected
