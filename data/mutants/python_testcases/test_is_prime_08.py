import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.is_prime_08 import is_prime_08
else:
    from python_programs.is_prime_08 import is_prime_08


testdata = load_json_testcases(is_prime_08.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_is_prime(input_data, expected):
    assert is_prime_08(*input_data) == expected
