import re
from pathlib import Path

import pytest
from conftest import REPO, run_coral

from coral.config import Config, ConfigError, load_config, parse_override

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_local_and_smoke_configs_exist() -> None:
    names = {p.name for p in CONFIGS}
    assert {"local.yaml", "smoke.yaml"} <= names


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("evolution:\n  mutation_rat: 0.3\n", "unknown key 'evolution.mutation_rat'"),
        ("population: -4\n", "population"),
        ("genes:\n  adapter_types: [lora, qlora]\n", "genes.adapter_types"),
        ("knobs:\n  top_p: [0.5, 1.5]\n", "knobs.top_p"),
        ("genes:\n  ranks: []\n", "genes.ranks"),
        ("seed: banana\n", "seed"),
        ("population: [1, 2\n", "not valid YAML"),
        ("- just\n- a list\n", "top level must be a mapping"),
    ],
)
def test_bad_config_fails_with_one_line_naming_the_key(tmp_path, text, needle) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
    proc = run_coral("config", "show", str(path))
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_file_is_one_clear_line(tmp_path) -> None:
    proc = run_coral("config", "show", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "config file not found" in proc.stderr


def test_overrides_are_yaml_scalars_and_checked(tmp_path) -> None:
    path = write(tmp_path, "population: 4\n")
    cfg = load_config(path, ["population=6", "evolution.gate.schedule=linear", "seed=0x10"])
    assert cfg.population == 6 and cfg.evolution.gate.schedule == "linear" and cfg.seed == 16
    assert parse_override("knobs.top_p=[0.5, 0.9]") == (["knobs", "top_p"], [0.5, 0.9])
    with pytest.raises(ConfigError, match="unknown key 'evolution.bogus'"):
        load_config(path, ["evolution.bogus=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(path, ["population"])


def test_a_value_yaml_cannot_read_is_one_line_naming_the_key(tmp_path) -> None:
    # A control character is a ReaderError, which (unlike a syntax error) has no `problem`.
    for raw in ("\x01", "[1, 2"):
        with pytest.raises(ConfigError) as info:
            parse_override(f"knobs.top_p={raw}")
        message = str(info.value)
        assert message.startswith("--set knobs.top_p: value") and "\n" not in message
    bad = tmp_path / "bad.yaml"
    bad.write_text("population: \x01\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "is not valid YAML: unacceptable character" in str(info.value) and "\n" not in str(info.value)


def _laughs(levels: int) -> str:
    """Nine of nine of ... nine: a 1 KB file, 9**levels values once its aliases are expanded."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ngenes:\n  target_modules: *l{levels - 1}\n"


@pytest.mark.parametrize(("text", "needle"), [
    ("seed: " + "[" * 100_000 + "]" * 100_000 + "\n", "is not valid YAML: nested too deeply"),
    ("seed: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", "is not valid YAML: nested too deeply"),
    ("seed: " + "9" * 5_000 + "\n", "is not valid YAML: Exceeds the limit (4300 digits)"),
    (_laughs(9), "more than 100,000 values once aliases are expanded"),
])
def test_a_config_yaml_cannot_take_is_one_line_not_a_traceback_or_a_hang(tmp_path, text, needle) -> None:
    """Each raised RecursionError or ValueError out of the loader, or (aliases: 387 million
    values) validated and quoted for hours."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert needle in message and "\n" not in message, message


def test_a_bad_value_is_quoted_short(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, _laughs(4)))  # 6,561 strings where lists of names go
    message = str(info.value)
    assert "genes.target_modules" in message and len(message) < 400, message
    with pytest.raises(ConfigError) as info:
        parse_override("seed=" + "[" * 5_000 + "]" * 5_000)
    assert "(nested too deeply)" in str(info.value) and len(str(info.value)) < 400


def test_paths_resolve_relative_to_the_config_file(tmp_path) -> None:
    sub = tmp_path / "cfgs"
    sub.mkdir()
    path = sub / "c.yaml"
    path.write_text("benchmark:\n  root: ../bench\nmodel:\n  name: ./m\n")
    cfg = load_config(path)
    assert cfg.benchmark.root == (tmp_path / "bench").resolve()
    assert cfg.model.name == str((sub / "m").resolve())
    hub = write(tmp_path, "model:\n  name: codellama/CodeLlama-7b-Python-hf\n")
    assert load_config(hub).model.name == "codellama/CodeLlama-7b-Python-hf"


def test_config_show_prints_resolved_config_with_override(tmp_path) -> None:
    path = write(tmp_path, "population: 5\n")
    proc = run_coral("config", "show", str(path), "--set", "generations=7", "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(proc.stdout)
    assert data["population"] == 5 and data["generations"] == 7
    assert data["objectives"]["weights"]["bugfix"] == 1.0  # defaults are filled in


def _leaf_fields(model, prefix=""):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaf_fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", name


def test_every_config_key_is_read_somewhere() -> None:
    """A key that nothing reads does not exist: each leaf name is used outside config.py."""
    sources = "\n".join(
        p.read_text() for p in (REPO / "coral").rglob("*.py") if p.name != "config.py"
    )
    unread = [
        path for path, name in _leaf_fields(Config)
        if not re.search(rf"\.{name}\b|\[\"{name}\"\]|\"{name}\"", sources)
    ]
    assert unread == [], f"config keys nothing reads: {unread}"


def test_no_config_value_lets_a_box_fork_without_bound() -> None:
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    """`sandbox.max_processes` is each box's RLIMIT_NPROC; it had no upper bound, so a config
    could hand a candidate's fork bomb the machine's whole process table for its wall time."""
    with pytest.raises(ConfigError, match="sandbox.max_processes"):
        load_config(smoke, ["sandbox.max_processes=1000000"])
    assert load_config(smoke, ["sandbox.max_processes=1024"]).sandbox.max_processes == 1024
