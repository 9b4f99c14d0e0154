"""Against real Modal, only when MODAL_TOKEN_ID and MODAL_TOKEN_SECRET are set as pytest starts.

The contract, worker and executor suites also gain a `modal-live` backend then (see
coral.testing.transports.py); this file checks the Modal-only facts on the real service.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral.execution.transport.base import Transport
from coral.testing.transports import _LIVE_TOKEN, make_modal_live

pytestmark = pytest.mark.skipif(not all(_LIVE_TOKEN), reason="no Modal token in the environment")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Transport]:
    transport = make_modal_live(tmp_path)
    yield transport
    transport.close()  # deletes the queues and dicts it made


def test_live_round_trip_claim_and_partitions(live: Transport) -> None:
    q = live.queue("jobs-echo")
    q.put_many(["a", "b"], partition="run-live")
    assert q.len(partition="run-live") == 2 and q.len() == 0
    assert q.get_many(5, partition="run-live") == ["a", "b"]
    assert q.get(block=False, partition="run-live") is None
    with pytest.raises(queue.Empty):
        q.get(timeout=1, partition="run-live")
    claims = live.dict("claims")
    assert claims.put("claim:k:0", {"owner": "me"}, skip_if_exists=True) is True
    assert claims.put("claim:k:0", {"owner": "you"}, skip_if_exists=True) is False
    assert claims.get("claim:k:0") == {"owner": "me"}
