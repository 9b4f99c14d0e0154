import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.to_base_08 import to_base_08
else:
    from python_programs.to_base_08 import to_base_08


testdata = load_json_testcases(to_base_08.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_to_base(input_data, expected):
    assert to_base_08(*input_data) == expected
