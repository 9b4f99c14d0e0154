import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.sieve_08 import sieve_08
else:
    from python_programs.sieve_08 import sieve_08


testdata = load_json_testcases(sieve_08.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_sieve(input_data, expected):
    assert sieve_08(*input_data) == expected
