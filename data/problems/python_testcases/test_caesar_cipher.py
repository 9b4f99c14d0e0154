import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.caesar_cipher import caesar_cipher
else:
    from python_programs.caesar_cipher import caesar_cipher


testdata = load_json_testcases(caesar_cipher.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_caesar_cipher(input_data, expected):
    assert caesar_cipher(*input_data) == expected
