import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.sieve_06 import sieve_06
else:
    from python_programs.sieve_06 import sieve_06


testdata = load_json_testcases(sieve_06.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_sieve(input_data, expected):
    assert sieve_06(*input_data) == expected
