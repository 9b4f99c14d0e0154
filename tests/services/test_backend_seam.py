"""The backend seam (docs/architecture.md, "Backends"): one registry maps `backend.kind` to a
Backend; nothing else compares the kind. And pages/ and app.py are a shell over coral.services,
coral.analysis and coral.config."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from coral.config import Config, load_config
from coral.errors import ConfigError
from coral.execution.transport.local import LocalTransport
from coral.home import Home
from coral.modal.backend import ModalBackend
from coral.run.backend import Backend, LocalBackend, RunContext
from coral.services.backends import BACKEND_KINDS, backend_for, run_backend
from coral.services.dashboard import choices

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "coral" / "services" / "backends.py"
SCANNED = [*sorted((REPO / "coral").rglob("*.py")), *sorted((REPO / "pages").rglob("*.py")),
           REPO / "app.py", *sorted((REPO / "bench").rglob("*.py"))]
SHELL = [*sorted((REPO / "pages").rglob("*.py")), REPO / "app.py"]
SHELL_MAY_IMPORT = ("coral.services", "coral.analysis", "coral.config")


def _operands(node: ast.Compare) -> list[ast.expr]:
    out: list[ast.expr] = []
    for operand in [node.left, *node.comparators]:
        out.extend(operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand])
    return out


def kind_comparisons(source: str) -> list[int]:
    """Lines comparing a backend kind: `X.backend.kind == ...`, or any comparison with a
    backend's name as a string ("serial", "local", "modal"), which is how a kind copied into a
    variable gets compared; `match` on one counts too."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = _operands(node)
            if any(ast.unparse(o).endswith("backend.kind") for o in operands) or any(
                    isinstance(o, ast.Constant) and o.value in BACKEND_KINDS for o in operands):
                lines.append(node.lineno)
        elif isinstance(node, ast.match_case) and any(
                isinstance(p, ast.MatchValue) and isinstance(p.value, ast.Constant)
                and p.value.value in BACKEND_KINDS for p in ast.walk(node.pattern)):
            lines.append(node.pattern.lineno)
    return sorted(lines)


def test_the_scanner_finds_each_way_of_comparing_a_kind() -> None:
    bad = ('if config.backend.kind == "modal": pass\n'
           'kind = config.backend.kind\n'
           'x = "local" if kind == "serial" else kind\n'
           'if kind in ("local", "serial"): pass\n'
           'match kind:\n    case "modal": pass\n'
           'y = self.config.backend.kind != other\n')
    assert kind_comparisons(bad) == [1, 3, 4, 6, 7]
    assert kind_comparisons('if job.kind == "test": pass\nz = f"backend.kind={k}"\n') == []


def test_no_module_but_the_registry_compares_backend_kind() -> None:
    found = {str(path.relative_to(REPO)): lines for path in SCANNED if path != REGISTRY
             if (lines := kind_comparisons(path.read_text(encoding="utf-8")))}
    assert found == {}, f"compare backend kinds only in {REGISTRY.relative_to(REPO)}: {found}"
    assert kind_comparisons(REGISTRY.read_text(encoding="utf-8"))  # the registry itself does


def test_the_registry_serves_every_kind_the_config_allows() -> None:
    assert tuple(choices("backend.kind")) == BACKEND_KINDS
    for kind in BACKEND_KINDS:
        backend = backend_for(kind)
        assert isinstance(backend, Backend) and backend.kind == kind
    assert backend_for("serial").runs_here and backend_for("local").runs_here
    assert not backend_for("modal").runs_here
    with pytest.raises(ConfigError, match="unknown backend 'cloud'"):
        backend_for("cloud")


def test_serial_and_local_share_one_home_and_transport(tmp_path: Path) -> None:
    home = Home(tmp_path)
    config = Config()
    for backend in (LocalBackend(pool=False), LocalBackend(pool=True)):
        with backend.open_transport(home, config) as transport:
            assert isinstance(transport, LocalTransport)
            transport.dict("control").put("k", backend.kind)
    with LocalTransport(home.queue_db) as transport:
        assert transport.dict("control").get("k") == "local"
    serial, serial_launcher = LocalBackend(pool=False).execution(
        LocalTransport(home.queue_db), "r", config, RunContext(LocalBackend(pool=False), home))
    assert serial_launcher is None  # serial runs jobs in the engine's process


def test_a_run_is_found_on_the_backend_that_holds_it(tmp_path: Path) -> None:
    """A run with a folder here is served by its config's backend; a Modal run submitted from
    here lives on the Volume (the registry asks each remote backend); anything else is one line."""
    home = Home(tmp_path).ensure()
    from coral.run.registry import register_run

    config = load_config(REPO / "configs" / "smoke.yaml", ["backend.kind=serial"])
    register_run(home, "here", config, {"train": [], "eval": []})
    backend, found = run_backend(home, "here")
    assert backend.kind == "serial" and found == config
    (home.root / "modal-runs").mkdir()
    (home.root / "modal-runs" / "there.json").write_text(
        '{"run_id": "there", "app": "coral", "volume": "coral-home", "calls": ["fc-1"]}')
    backend, found = run_backend(home, "there")
    assert isinstance(backend, ModalBackend) and found is None
    assert [r.run_id for r in backend.remote_runs(home)] == ["there"]
    with pytest.raises(Exception, match="no run 'nowhere'"):
        run_backend(home, "nowhere")


def shell_imports(source: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] if node.module != "coral" else [f"coral.{a.name}" for a in node.names]
    return [n for n in names if n == "coral" or n.startswith("coral.")]


def test_the_shell_check_sees_each_import_form() -> None:
    source = ("import coral.run.registry\nfrom coral.store import schema\nfrom coral import analysis, run\n"
              "def f():\n    from coral.home import Home\n")
    assert shell_imports(source) == ["coral.run.registry", "coral.store", "coral.analysis", "coral.run",
                                     "coral.home"]


def test_pages_and_app_import_only_services_analysis_and_config() -> None:
    """Item 6 of issue 26: the dashboard is a thin shell (import-linter checks packages only,
    and pages/ is not one, so the check parses the files; deferred imports count)."""
    wrong = {str(path.relative_to(REPO)): bad for path in SHELL
             if (bad := [n for n in shell_imports(path.read_text(encoding="utf-8"))
                         if not any(n == a or n.startswith(a + ".") for a in SHELL_MAY_IMPORT)])}
    assert wrong == {}


def test_a_runs_folder_is_read_where_it_lives(tmp_path: Path) -> None:
    """Local disk for a local run; the Modal Volume (here the double's) for a Modal run, with a
    missing file None on both, not an exception of either SDK."""
    from coral.testing.modal_double import ModalDouble

    home = Home(tmp_path / "laptop").ensure()
    (home.run_dir("near")).mkdir(parents=True)
    (home.run_dir("near") / "status.json").write_text('{"state": "running"}')
    local = backend_for("local")
    assert local.read_run_file(home, "near", "status.json") == b'{"state": "running"}'
    assert local.read_run_file(home, "near", "progress.json") is None

    api = ModalDouble(volume_root=tmp_path / "volumes")
    api.Volume.from_name("coral-home", create_if_missing=True)
    far = tmp_path / "volumes" / "coral-home" / "runs" / "far"
    far.mkdir(parents=True)
    (far / "status.json").write_text('{"state": "paused", "generation": 1}')
    (home.root / "modal-runs").mkdir()
    (home.root / "modal-runs" / "far.json").write_text(
        '{"run_id": "far", "app": "coral", "volume": "coral-home", "calls": ["fc-1"]}')
    modal = backend_for("modal", api=api)
    assert modal.knows_run(home, "far") and not modal.knows_run(home, "near")
    assert modal.read_run_file(home, "far", "status.json") == b'{"state": "paused", "generation": 1}'
    assert modal.read_run_file(home, "far", "progress.json") is None
    assert modal.run_status(home, "far")["state"] == "paused"
