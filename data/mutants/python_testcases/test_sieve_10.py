import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.sieve_10 import sieve_10
else:
    from python_programs.sieve_10 import sieve_10


testdata = load_json_testcases(sieve_10.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_sieve(input_data, expected):
    assert sieve_10(*input_data) == expected
