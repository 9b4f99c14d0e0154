"""`coral run` with the modal backend hands the whole run to Modal; without a token it says how."""

from conftest import REPO, run_coral


def test_modal_run_without_token_is_one_line_naming_modal_setup(tmp_path) -> None:
    proc = run_coral("run", str(REPO / "configs" / "modal-codellama.yaml"),
                     env={"HOME": str(tmp_path)})
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "modal setup" in lines[0], proc.stderr
    assert proc.stdout == ""  # no run id printed: nothing was registered


def test_backend_override_to_modal_also_goes_through_modal(tmp_path) -> None:
    proc = run_coral("run", str(REPO / "configs" / "smoke.yaml"), "--backend", "modal",
                     env={"HOME": str(tmp_path)})
    assert proc.returncode == 2 and "modal setup" in proc.stderr
