import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.grid_paths_02 import grid_paths_02
else:
    from python_programs.grid_paths_02 import grid_paths_02


testdata = load_json_testcases(grid_paths_02.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_grid_paths(input_data, expected):
    assert grid_paths_02(*input_data) == expected
