import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.sieve_05 import sieve_05
else:
    from python_programs.sieve_05 import sieve_05


testdata = load_json_testcases(sieve_05.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_sieve(input_data, expected):
    assert sieve_05(*input_data) == expected
