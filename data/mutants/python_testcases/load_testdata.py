import json
from pathlib import Path

JSON_TESTCASES = Path(__file__).resolve().parent.parent / "json_testcases"


def load_json_testcases(algorithm_name):
    """Return the cases of json_testcases/<algorithm_name>.json as [input_args, expected] pairs."""
    with open(JSON_TESTCASES / f"{algorithm_name}.json", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
