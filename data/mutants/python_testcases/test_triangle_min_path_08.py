import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.triangle_min_path_08 import triangle_min_path_08
else:
    from python_programs.triangle_min_path_08 import triangle_min_path_08


testdata = load_json_testcases(triangle_min_path_08.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_triangle_min_path(input_data, expected):
    assert triangle_min_path_08(*input_data) == expected
