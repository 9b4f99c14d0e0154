import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.collatz_steps_03 import collatz_steps_03
else:
    from python_programs.collatz_steps_03 import collatz_steps_03


testdata = load_json_testcases(collatz_steps_03.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_collatz_steps(input_data, expected):
    assert collatz_steps_03(*input_data) == expected
