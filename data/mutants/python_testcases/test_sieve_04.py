import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.sieve_04 import sieve_04
else:
    from python_programs.sieve_04 import sieve_04


testdata = load_json_testcases(sieve_04.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_sieve(input_data, expected):
    assert sieve_04(*input_data) == expected
