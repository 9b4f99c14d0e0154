import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.sieve_01 import sieve_01
else:
    from python_programs.sieve_01 import sieve_01


testdata = load_json_testcases(sieve_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_sieve(input_data, expected):
    assert sieve_01(*input_data) == expected
