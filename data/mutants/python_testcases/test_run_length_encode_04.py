import pytest

from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.run_length_encode_04 import run_length_encode_04
else:
    from python_programs.run_length_encode_04 import run_length_encode_04


testdata = load_json_testcases(run_length_encode_04.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_run_length_encode(input_data, expected):
    assert run_length_encode_04(*input_data) == expected
