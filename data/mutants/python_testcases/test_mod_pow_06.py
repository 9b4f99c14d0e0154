import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.mod_pow_06 import mod_pow_06
else:
    from python_programs.mod_pow_06 import mod_pow_06


testdata = load_json_testcases(mod_pow_06.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_mod_pow(input_data, expected):
    assert mod_pow_06(*input_data) == expected
