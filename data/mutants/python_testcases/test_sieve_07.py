import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.sieve_07 import sieve_07
else:
    from python_programs.sieve_07 import sieve_07


testdata = load_json_testcases(sieve_07.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_sieve(input_data, expected):
    assert sieve_07(*input_data) == expected
