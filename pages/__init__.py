"""Streamlit-only pieces the pages share: the ingestor resource, the run picker, empty states.

A package file, not a page: Streamlit lists every pages/*.py except __init__.py before
app.py's st.navigation takes over, so shared code lives here.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import streamlit as st
from streamlit import config as streamlit_config
from streamlit.runtime.pages_manager import PagesManager

from coral.services import CoralError, Home
from coral.services import live as live_service
from coral.services.backends import use_modal_double
from coral.services.dashboard import JobBodies, launch_run, smoke_request, start_ingestor
from coral.services.live import default_run
from coral.services.text import literal

LIVE_PAGE = "pages/live.py"
LAUNCH_PAGE = "pages/launch.py"
COMPARE_PAGE = "pages/compare.py"

# Streamlit runs a full gc.collect() after every script run, fragment reruns included. With the
# Live page's fragments (about three runs a second) that was a third of the server's CPU, holding
# the GIL the ingestor thread needs. Python's own threshold-driven collection still runs. Set
# here, not in app.py: every page imports this module, and a page's URL runs the page alone.
streamlit_config.set_option("runner.postScriptGC", False)

# A page's URL (a bookmark, a shared link: /live, /runs) opened before anyone opened the root of a
# freshly started dashboard: Streamlit, seeing a pages/ folder and no st.navigation call yet, runs
# that page alone (its legacy multipage mode): no app.py, so no ingestor (the store never caught
# up), no wide layout, a sidebar of file names. app.py's st.navigation switches that mode off for
# the process; do the same here, then rerun, so this very request goes through app.py.
if PagesManager.uses_pages_directory:
    PagesManager.uses_pages_directory = False
    st.rerun()


def job_bodies() -> JobBodies:
    """Stand-in job bodies for launched runs: `coral dashboard --handlers M:A` (tests only),
    which Streamlit hands to the script as its arguments. An AppTest sets the session key."""
    if "job_handlers" not in st.session_state:
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--handlers", default=None)
        st.session_state["job_handlers"] = parser.parse_known_args(sys.argv[1:])[0].handlers
    return JobBodies(st.session_state["job_handlers"])


def _modal_double_handle() -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--modal-double", default=None)
    return parser.parse_known_args(sys.argv[1:])[0].modal_double


# `coral dashboard --modal-double HANDLE` (a test hook): this process's Modal is the Modal double
# of that handle, and runs launched from the pages get it too (`coral run --modal-double`).
MODAL_DOUBLE = _modal_double_handle()
if MODAL_DOUBLE:
    use_modal_double(MODAL_DOUBLE)


def _stop(ingestor: Any) -> None:
    ingestor.stop()


@st.cache_resource(show_spinner=False, on_release=_stop)
def _ingestor(root: str) -> Any:
    # The store's single writer (docs/architecture.md): one thread per dashboard process and CORAL_HOME.
    return start_ingestor(Home(root))


def ingestor() -> Any:
    return _ingestor(str(Home().root))


def home() -> Home:
    return Home()


def run_ids() -> list[str]:
    """Registered runs, newest first (run ids sort by creation time)."""
    return live_service.run_ids(home())


def pick_run(label: str = "Run", key: str = "run_picker") -> str | None:
    """A run selector that remembers the last run chosen or launched across pages."""
    ids = run_ids()
    if not ids:
        return None
    current = st.session_state.get("run_id")
    if current not in ids:  # first look: the newest active run, else the newest finished one
        current = default_run(home())
    index = ids.index(current) if current in ids else 0
    run_id = st.selectbox(label, ids, index=index, key=key)
    st.session_state["run_id"] = run_id
    return run_id


def empty_state(what: str) -> None:
    """No runs yet: say what to do next, and offer the one-click smoke run."""
    st.info(f"No runs yet, so there is no {what} to show. Launch a run from the Launch page, "
            "or start the smoke config (CI-sized: 4 genomes, 2 generations) right here.")
    if st.button("Launch the smoke config", type="primary", key=f"smoke-{what}"):
        try:
            st.session_state["run_id"] = launch_run(smoke_request().with_values(bodies=job_bodies()), home(),
                                                  modal_double=MODAL_DOUBLE)
        except CoralError as exc:
            st.error(literal(exc))
            return
        st.switch_page(LIVE_PAGE)


def show_error(exc: Exception) -> None:
    st.error(literal(exc))
