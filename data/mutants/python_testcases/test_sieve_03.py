import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.sieve_03 import sieve_03
else:
    from python_programs.sieve_03 import sieve_03


testdata = load_json_testcases(sieve_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_sieve(input_data, expected):
    assert sieve_03(*input_data) == expected
