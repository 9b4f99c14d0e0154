import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.matrix_multiply_10 import matrix_multiply_10
else:
    from python_programs.matrix_multiply_10 import matrix_multiply_10


testdata = load_json_testcases(matrix_multiply_10.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_matrix_multiply(input_data, expected):
    assert matrix_multiply_10(*input_data) == expected
