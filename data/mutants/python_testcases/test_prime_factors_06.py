import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.prime_factors_06 import prime_factors_06
else:
    from python_programs.prime_factors_06 import prime_factors_06


testdata = load_json_testcases(prime_factors_06.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_prime_factors(input_data, expected):
    assert prime_factors_06(*input_data) == expected
