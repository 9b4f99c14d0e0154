import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.mod_pow import mod_pow
else:
    from python_programs.mod_pow import mod_pow


testdata = load_json_testcases(mod_pow.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_mod_pow(input_data, expected):
    assert mod_pow(*input_data) == expected
