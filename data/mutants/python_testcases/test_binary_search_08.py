import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.binary_search_08 import binary_search_08
else:
    from python_programs.binary_search_08 import binary_search_08


testdata = load_json_testcases(binary_search_08.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_binary_search(input_data, expected):
    assert binary_search_08(*input_data) == expected
