import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.mod_pow_01 import mod_pow_01
else:
    from python_programs.mod_pow_01 import mod_pow_01


testdata = load_json_testcases(mod_pow_01.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_mod_pow(input_data, expected):
    assert mod_pow_01(*input_data) == expected
