"""The Modal double's own semantics (beyond the transport contract), the Modal transport's
mapping onto it, credentials, and the `coral modal` commands.

The contract tests (test_transport_contract.py) already run unchanged against the double, in
process and through its server; these cover what the protocol does not expose.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from modal import exception as modal_exception

from coral.cli import main
from coral.config import Config, ModalConfig
from coral.errors import CoralError
from coral.execution.jobs import CLAIMS_DICT, LEASES_DICT, job_queue
from coral.execution.transport.base import TransportError
from coral.execution.transport.modal_backend import NO_CREDENTIALS, ModalTransport, has_credentials
from coral.home import Home
from coral.modal.constants import SECTION_ENV
from coral.modal.launcher import status
from coral.services.backends import backend_for
from coral.testing.modal_double import (
    MAX_PARTITION_BYTES,
    MAX_PARTITION_ITEMS,
    ModalDouble,
)

DAY = 24 * 3600


@pytest.fixture
def no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-such.toml"))


# ------------------------------------------------------------------ the double, as `modal`


def test_partitions_expire_a_day_after_their_last_put() -> None:
    now = [1000.0]
    api = ModalDouble(clock=lambda: now[0])
    q = api.Queue.from_name("q", create_if_missing=True)
    q.put("a", partition="p")
    q.put("short", partition="s", partition_ttl=60)
    now[0] += DAY - 1
    q.put("b", partition="p")  # a put renews the partition's whole lifetime
    assert q.len(partition="s") == 0  # its own, shorter ttl
    now[0] += DAY - 1
    assert q.get_many(5, partition="p") == ["a", "b"]
    q.put("c", partition="p")
    api.advance_clock(DAY)
    assert q.len(partition="p") == 0
    assert q.get(block=False, partition="p") is None


def test_get_semantics_match_modal() -> None:
    q = ModalDouble().Queue.from_name("q", create_if_missing=True)
    assert q.get(block=False) is None
    assert q.get_many(3, block=False) == []
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    q.put_many(["1", "2", "3"])
    assert q.get_many(2) == ["1", "2"]  # an atomic pop: nothing to acknowledge
    assert q.len() == 1
    assert q.get() == "3"


def test_limits_raise_modal_errors() -> None:
    q = ModalDouble().Queue.from_name("q", create_if_missing=True)
    with pytest.raises(modal_exception.RequestSizeError):
        q.put("x" * (1024 * 1024 + 1))
    for bad in ("", "k" * 65):
        with pytest.raises(modal_exception.InvalidError):
            q.put("x", partition=bad)
    with pytest.raises(modal_exception.InvalidError):
        q.len(partition="p", total=True)
    q.put_many(["i"] * MAX_PARTITION_ITEMS, partition="full")
    with pytest.raises(queue.Full):
        q.put("over", partition="full", block=False)
    with pytest.raises(queue.Full):
        q.put_many(["a", "b"], partition="full", timeout=0.05)
    assert q.len(partition="full") == MAX_PARTITION_ITEMS  # all or nothing
    big = "y" * (1024 * 1024)
    q.put_many([big] * 64, partition="bytes")  # exactly 64 MiB
    assert MAX_PARTITION_BYTES == 64 * big.__len__()
    with pytest.raises(queue.Full):
        q.put("z", partition="bytes", block=False)


def test_lookups_are_lazy_and_names_checked() -> None:
    api = ModalDouble()
    missing = api.Queue.from_name("never-created")  # no error yet, as Modal's lazy handle
    with pytest.raises(modal_exception.NotFoundError):
        missing.len()
    with pytest.raises(modal_exception.NotFoundError):
        api.Dict.from_name("nope").get("k")
    with pytest.raises(modal_exception.InvalidError):
        api.Queue.from_name("bad name", create_if_missing=True)


def test_functions_volumes_and_calls_resolve_lazily_as_modal_1_6_4(tmp_path: Path) -> None:
    """modal 1.6.4: Function/Cls.from_name, FunctionCall.from_id and Volume.from_name return
    handles that resolve on first use (hydrate_lazily); Volume.read_file is a generator raising
    the builtin FileNotFoundError (modal/volume.py); Volume.listdir of a missing path raises
    NotFoundError."""
    api = ModalDouble(volume_root=tmp_path)
    function = api.Function.from_name("later", "f")
    method = api.Cls.from_name("later", "C")(model="m").serve
    call = api.FunctionCall.from_id("fc-never")
    volume = api.Volume.from_name("not-yet")
    for use in (lambda: function.hydrate(), lambda: method.spawn(), lambda: call.get(timeout=0),
                lambda: volume.hydrate()):
        with pytest.raises(modal_exception.NotFoundError):
            use()
    with pytest.raises(modal_exception.NotFoundError, match="App 'later' not found"):
        function.spawn()
    api.deployed.register("later", "f", lambda: "deployed now")
    assert function.remote() == "deployed now"  # a failed resolution is tried again
    created = api.Volume.from_name("v", create_if_missing=True)
    assert not (tmp_path / "v").exists()  # created at first use, not at the lookup
    chunks = created.read_file("runs/r/status.json")  # a generator: nothing happens yet
    with pytest.raises(FileNotFoundError):
        b"".join(chunks)
    assert (tmp_path / "v").is_dir()
    with pytest.raises(modal_exception.NotFoundError):
        created.listdir("adapters")


def test_dict_put_if_absent_and_no_default_pop() -> None:
    d = ModalDouble().Dict.from_name("d", create_if_missing=True)
    assert d.put("k", {"v": 1}, skip_if_exists=True) is True
    assert d.put("k", {"v": 2}, skip_if_exists=True) is False
    assert d["k"] == {"v": 1} and "k" in d
    assert d.put("k", {"v": 3}) is True
    assert d.pop("missing", "fallback") == "fallback"
    with pytest.raises(KeyError):
        d.pop("missing")
    assert dict(d.items()) == {"k": {"v": 3}}


def test_functions_spawn_calls_within_max_containers() -> None:
    api = ModalDouble()
    gate = threading.Event()
    seen: list[str | None] = []

    def body(x: int) -> int:
        seen.append(api.current_function_call_id())
        gate.wait(30)
        return x * 2

    api.deployed.register("app", "double_it", body, max_containers=2)
    fn = api.Function.from_name("app", "double_it")
    calls = [fn.spawn(i) for i in range(5)]
    with pytest.raises(TimeoutError):  # still running: Modal's FunctionCall.get(timeout=0)
        calls[0].get(timeout=0)
    deadline = time.monotonic() + 10
    while (stats := fn.get_current_stats()).num_running_inputs < 2:  # both containers took one
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert (stats.num_total_runners, stats.backlog) == (2, 3)
    gate.set()
    assert [c.get(timeout=30) for c in calls] == [0, 2, 4, 6, 8]
    assert api.deployed.functions[("app", "double_it")].pool.peak == 2
    assert sorted(seen) == sorted(c.object_id for c in calls)
    assert api.current_function_call_id() is None  # outside any call
    missing = api.Function.from_name("app", "missing")  # lazy, as modal 1.6.4's
    with pytest.raises(modal_exception.NotFoundError, match="Lookup failed for Function 'missing'"):
        missing.spawn()



def test_retries_run_a_raising_input_again_under_its_call_id() -> None:
    # modal.Retries: an input whose body raises runs again (after 1 s, doubling by default) up
    # to `retries` times; only then does .get() raise. The orchestrator counts on it
    # (orchestrator_retries): a run whose container lost Modal for a while resumes.
    api = ModalDouble()
    attempts: dict[str, list[str | None]] = {}

    def flaky(name: str, failures: int) -> str:
        seen = attempts.setdefault(name, [])
        seen.append(api.current_function_call_id())
        if len(seen) <= failures:
            raise ValueError(f"{name} attempt {len(seen)}")
        return name

    api.deployed.register("app", "flaky", flaky, retries=2, retry_delay=0.05)
    fn = api.Function.from_name("app", "flaky")
    ok, lost = fn.spawn("ok", 2), fn.spawn("lost", 3)
    assert ok.get(timeout=30) == "ok" and ok.retries == 2
    with pytest.raises(ValueError, match="lost attempt 3"):
        lost.get(timeout=30)
    assert lost.retries == 2
    assert set(attempts["ok"]) == {ok.object_id} and len(attempts["lost"]) == 3
    api.deployed.register("app", "once", flaky)  # retries=0, Modal's default: no second attempt
    with pytest.raises(ValueError, match="once attempt 1"):
        api.Function.from_name("app", "once").spawn("once", 1).get(timeout=30)


def test_enter_runs_once_per_container_without_a_call_id() -> None:
    api = ModalDouble()
    entered: list[str | None] = []

    class Model:
        def __init__(self, model: str) -> None:  # plays @modal.enter
            entered.append(api.current_function_call_id())
            self.loaded = model

        def serve(self, suffix: str) -> str:
            return f"{self.loaded}{suffix}:{api.current_function_call_id()}"

    api.deployed.register_cls("app", "Model", Model, max_containers=1)
    obj = api.Cls.from_name("app", "Model")(model="tiny")
    first = obj.serve.spawn("!")
    assert first.get(timeout=30) == f"tiny!:{first.object_id}"
    second = obj.serve.spawn("?")
    assert second.get(timeout=30) == f"tiny?:{second.object_id}"
    assert entered == [None]  # one container, one @enter, and no input in it
    other = api.Cls.from_name("app", "Model")(model="big")  # other parameters: other containers
    assert other.serve.remote("") .startswith("big:")
    assert entered == [None, None]


def test_an_enter_that_raises_fails_an_input_with_its_error(tmp_path: Path) -> None:
    api = ModalDouble()

    class Gated:
        def __init__(self) -> None:
            raise PermissionError("401: gated repo, no HF_TOKEN")

        def serve(self) -> str:
            return "never"

    api.deployed.register_cls("app", "Gated", Gated, max_containers=1)
    call = api.Cls.from_name("app", "Gated")().serve.spawn()
    with pytest.raises(PermissionError, match="gated repo"):
        call.get(timeout=30)
    mounts = ModalDouble(volume_root=tmp_path)  # a Volume that does not exist: no container
    mounts.deployed.register("app", "f", lambda: "never", volumes=("missing",))
    with pytest.raises(modal_exception.NotFoundError, match="missing"):
        mounts.Function.from_name("app", "f").spawn().get(timeout=30)


def test_a_container_sees_other_containers_writes_only_after_reload(tmp_path: Path) -> None:
    api = ModalDouble(volume_root=tmp_path)
    api.Volume.from_name("vol", create_if_missing=True).hydrate()
    wrote, go = threading.Event(), threading.Event()

    def writer() -> str:
        volume = api.Volume.from_name("vol")
        (volume.path / "adapter").write_text("weights")
        volume.commit()
        wrote.set()
        return "ok"

    def reader() -> list[bool]:
        volume = api.Volume.from_name("vol")
        seen = [(volume.path / "adapter").exists()]
        go.wait(30)
        seen.append((volume.path / "adapter").exists())  # committed, but not reloaded yet
        with open(volume.path / "keep", "w"):  # an open file blocks reload, as on Modal
            with pytest.raises(RuntimeError, match="open files"):
                volume.reload()
        volume.reload()
        seen.append((volume.path / "adapter").exists())
        return seen

    api.deployed.register("app", "writer", writer, volumes=("vol",))
    api.deployed.register("app", "reader", reader, volumes=("vol",))
    read = api.Function.from_name("app", "reader").spawn()
    time.sleep(0.2)  # the reader's container has mounted its view
    assert api.Function.from_name("app", "writer").remote() == "ok"
    go.set()
    assert read.get(timeout=30) == [False, False, True]
    assert (tmp_path / "vol" / "adapter").read_text() == "weights"  # the committed state
    assert (tmp_path / "vol" / "keep").exists()  # reload committed the reader's pending write
    with pytest.raises(RuntimeError, match="inside a container"):
        api.Volume.from_name("vol").reload()


def test_dict_entries_expire_after_seven_idle_days() -> None:
    now = [1000.0]
    api = ModalDouble(clock=lambda: now[0])
    d = api.Dict.from_name("d", create_if_missing=True)
    d.put("read", 1)
    d.put("idle", 2)
    now[0] += DAY * 6
    assert d.get("read") == 1  # a read keeps an entry alive
    assert sorted(d.keys()) == ["idle", "read"]  # listing does not
    now[0] += DAY * 1.5
    assert sorted(d.keys()) == ["read"] and d.get("idle") is None


# ------------------------------------------------------------------ the transport on top


def test_transport_names_objects_after_the_app_and_keeps_partitions() -> None:
    api = ModalDouble()
    t = ModalTransport("myapp", api=api)
    t.queue("jobs-train").put("j", partition="run-1")
    t.dict("claims").put("k", [1, 2])
    assert api.store.object_names("queue") == ["myapp-jobs-train"]
    assert api.store.object_names("dict") == ["myapp-claims"]
    raw = api.Queue.from_name("myapp-jobs-train")
    assert raw.partitions() == ["run-1"]
    assert api.Dict.from_name("myapp-claims").get("k") == "[1,2]"  # JSON text on Modal
    with pytest.raises(ValueError, match="shorter modal.app_name"):
        ModalTransport("a" * 55, api=api).queue("jobs-generate")


def test_open_transport_without_credentials_is_one_clear_line(no_token: None) -> None:
    assert not has_credentials()
    with pytest.raises(TransportError) as info:
        backend_for("modal").open_transport(Home(), Config())
    assert str(info.value) == NO_CREDENTIALS
    assert "modal setup" in NO_CREDENTIALS and "\n" not in NO_CREDENTIALS


def test_credentials_come_from_env_toml_or_the_container(
    no_token: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-x")
    assert not has_credentials()  # an id without a secret is not a token
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-x")
    assert has_credentials()
    monkeypatch.delenv("MODAL_TOKEN_ID")
    toml = tmp_path / "modal.toml"
    toml.write_text("[default]\ntoken_id = 'ak-x'\n")
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(toml))
    assert has_credentials()
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "none.toml"))
    monkeypatch.setenv("MODAL_IS_REMOTE", "1")  # inside a Modal container
    assert has_credentials()


# ------------------------------------------------------------------ coral modal ...


@pytest.mark.parametrize("action", ["deploy", "status"])
def test_commands_without_credentials_print_one_line(
    no_token: None, action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["modal", action]) == 2
    err = capsys.readouterr().err
    assert err == f"coral: error: {NO_CREDENTIALS}\n"


def test_deploy_runs_modal_deploy_with_the_validated_section(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("modal:\n  app_name: coral-x\n  gpu_train: A10G\n")
    assert main(["modal", "deploy", str(config), "--set", "modal.max_containers=3",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    section = json.loads(out[0].removeprefix(f"{SECTION_ENV}="))
    assert (section["app_name"], section["gpu_train"], section["max_containers"]) == (
        "coral-x", "A10G", 3)
    assert out[1].endswith("-m modal deploy -m coral.modal.app")

    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_run(cmd: list[str], env: dict[str, str], check: bool) -> Any:
        calls.append((cmd, env))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr("coral.cli.modal_cmd.subprocess.run", fake_run)
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-x")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-x")
    assert main(["modal", "deploy", str(config)]) == 0
    (cmd, env), = calls
    assert cmd[1:] == ["-m", "modal", "deploy", "-m", "coral.modal.app"]
    assert ModalConfig.model_validate_json(env[SECTION_ENV]).gpu_train == "A10G"


def test_bad_config_for_deploy_is_one_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("modal:\n  gpu: H100\n")
    assert main(["modal", "deploy", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coral: error: ") and "unknown key 'modal.gpu'" in err
    assert err.count("\n") == 1


def test_status_reports_queues_workers_and_cache(tmp_path: Path) -> None:
    api = ModalDouble(volume_root=tmp_path / "volumes")
    config = Config(modal=ModalConfig(app_name="st", volume="vol"))
    with pytest.raises(CoralError, match="not deployed, or deployed under another name; run `coral modal deploy"):
        status(config, api=api)
    gate = threading.Event()
    api.deployed.register("st", "test_worker", lambda: gate.wait(30), max_containers=1)
    train = api.Function.from_name("st", "test_worker")
    train.spawn(), train.spawn()
    t = ModalTransport("st", api=api)
    t.queue(job_queue("generate")).put_many(["a", "b"], partition="run-1")
    t.queue(job_queue("generate")).put("c")
    t.dict(LEASES_DICT).put("lease:r:j:0", {"owner": "modal:fc-1", "expires": 4e9})
    t.dict(LEASES_DICT).put("lease:r:k:0", {"owner": "modal:fc-2", "expires": 0.0})  # stale
    t.dict(CLAIMS_DICT).put("done:abc", {"owner": "x"})
    for key in ("abc", "def", ".tmp-ghi-123"):  # the last is being trained: not an adapter yet
        (tmp_path / "volumes" / "vol" / "adapters" / key).mkdir(parents=True)
    t.dict("containers").put("modal:fc-9", {"group": "generate", "run": "run-1", "jobs": 4,
                                            "busy": False, "since": time.time() - 30,
                                            "started": time.time() - 99})
    t.dict("containers").put("modal:fc-1", {"group": "train", "run": "run-1", "busy": False,
                                            "since": time.time(), "started": time.time()})
    wait_for_backlog = time.monotonic() + 10
    while train.get_current_stats().backlog != 1 and time.monotonic() < wait_for_backlog:
        time.sleep(0.01)  # the first call has reached its container
    report = status(config, api=api)
    gate.set()
    assert report["queues"]["jobs-generate"] == 3
    assert report["queues"]["jobs-train"] == 0
    assert report["workers"]["busy"] == 1
    assert report["workers"]["test_worker"] == {"running": 1, "backlog": 1}
    assert report["cache"] == {"adapters": 2, "done_markers": 1}
    from coral.cli.modal_cmd import format_status

    text = format_status(report, "vol")
    assert "jobs-generate 3" in text and "2 adapters on volume vol" in text
    idle = next(c for c in report["containers"] if c["worker"] == "modal:fc-9")
    assert 29 < idle["idle_seconds"] < 40 and not idle["stale"] and idle["jobs"] == 4
    assert "idle 30s" in text or "idle 31s" in text
    # fc-1 holds a live lease: busy, whatever its (throttled) record last said
    assert next(c for c in report["containers"] if c["worker"] == "modal:fc-1")["busy"]


def test_the_cross_process_server_is_test_code_not_product() -> None:
    import coral.modal.double as product
    import coral.testing.modal_double as testing

    assert not hasattr(product, "DoubleServer") and not hasattr(product, "connect")
    assert testing.ModalDouble is product.ModalDouble  # one double, served by test code
    with testing.DoubleServer() as server:  # `python -m coral.testing.modal_double`
        api = server.client()
        api.Queue.from_name("q", create_if_missing=True).put("x")
        assert server.address is not None
        other = testing.connect(server.address, server.authkey)
        assert other.Queue.from_name("q").get(block=False) == "x"
