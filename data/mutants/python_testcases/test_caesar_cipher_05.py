import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.caesar_cipher_05 import caesar_cipher_05
else:
    from python_programs.caesar_cipher_05 import caesar_cipher_05


testdata = load_json_testcases(caesar_cipher_05.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_caesar_cipher(input_data, expected):
    assert caesar_cipher_05(*input_data) == expected
