import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.grid_paths_07 import grid_paths_07
else:
    from python_programs.grid_paths_07 import grid_paths_07


testdata = load_json_testcases(grid_paths_07.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_grid_paths(input_data, expected):
    assert grid_paths_07(*input_data) == expected
