"""Cases of the official E2B Python SDK against sandboxer's E2B front door.

Run by sandboxer-cli's tests/it/e2b.rs: `python sdk_cases.py CASE`, with
E2B_API_URL, E2B_API_KEY and E2B_DOMAIN pointing at a `sandboxer serve`
(OTHER_API_KEY: a token of another actor). Each case prints one JSON object
of what the SDK answered; the Rust test asserts on it. An exception that a
case does not expect propagates: the process exits non-zero.
"""

import json
import os
import sys
import uuid

from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import SandboxException


def err(f):
    """Call f; the exception's class name and message, or None."""
    try:
        f()
    except Exception as e:  # noqa: BLE001 - the class is what is checked
        return {"type": type(e).__name__, "message": str(e)}
    return None


def create():
    s = Sandbox.create(template="canary", metadata={"team": "a b", "run": "7"}, timeout=120)
    info = s.get_info()
    return {
        "id": s.sandbox_id,
        "template_id": info.template_id,
        "metadata": info.metadata,
        "seconds": (info.end_at - info.started_at).total_seconds(),
        "state": info.state.value,
        "envd_version": info.envd_version,
        "cpu_count": info.cpu_count,
    }


def list_metadata():
    a = Sandbox.create(template="canary", metadata={"group": "x"})
    b = Sandbox.create(template="base", metadata={"group": "y"})
    x = [i.sandbox_id for i in Sandbox.list(query=SandboxQuery(metadata={"group": "x"})).next_items()]
    running = Sandbox.list(query=SandboxQuery(state=[SandboxState.RUNNING]))
    ids = [i.sandbox_id for i in running.next_items()]
    paused = [i.sandbox_id for i in Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()]
    return {"a": a.sandbox_id, "b": b.sandbox_id, "x": x, "running": ids, "paused": paused}


def timeout_and_kill():
    s = Sandbox.create(template="canary", timeout=60)
    before = s.get_info()
    s.set_timeout(600)
    after = Sandbox.get_info(s.sandbox_id)
    killed = s.kill()
    gone = err(lambda: Sandbox.get_info(s.sandbox_id))
    again = Sandbox.kill(s.sandbox_id)
    return {
        "id": s.sandbox_id,
        "before": (before.end_at - before.started_at).total_seconds(),
        "moved": (after.end_at - before.end_at).total_seconds(),
        "killed": killed,
        "gone": gone,
        "again": again,
    }


def idempotent():
    key = f"sdk-{uuid.uuid4()}"
    a = Sandbox.create(template="canary", idempotency_key=key)
    b = Sandbox.create(template="canary", idempotency_key=key)
    return {"a": a.sandbox_id, "b": b.sandbox_id}


def wrong_key():
    return {"create": err(lambda: Sandbox.create(template="canary")),
            "list": err(lambda: Sandbox.list().next_items())}


def other_actor():
    mine = Sandbox.create(template="canary")
    other = os.environ["OTHER_API_KEY"]
    return {
        "id": mine.sandbox_id,
        "info": err(lambda: Sandbox.get_info(mine.sandbox_id, api_key=other)),
        "kill": Sandbox.kill(mine.sandbox_id, api_key=other),
        "list": [i.sandbox_id for i in Sandbox.list(api_key=other).next_items()],
        "connect": err(lambda: Sandbox.connect(mine.sandbox_id, api_key=other)),
        "still_mine": Sandbox.get_info(mine.sandbox_id).state.value,
    }


def connect_and_metrics():
    s = Sandbox.create(template="canary", timeout=60)
    c = Sandbox.connect(s.sandbox_id, timeout=300)
    info = c.get_info()
    m = c.get_metrics()
    return {
        "id": s.sandbox_id,
        "connected": c.sandbox_id,
        "left": (info.end_at - info.started_at).total_seconds(),
        "metrics": len(m),
        "cpu_count": m[0].cpu_count if m else None,
        "mem_total": m[0].mem_total if m else None,
    }


def pause_connect_snapshot():
    s = Sandbox.create(template="canary", timeout=600)
    first = s.pause()
    again = Sandbox.pause(s.sandbox_id)
    paused = [i.sandbox_id for i in Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()]
    state = Sandbox.get_info(s.sandbox_id).state.value
    timeout_while_paused = err(lambda: s.set_timeout(60))
    c = Sandbox.connect(s.sandbox_id, timeout=300)
    info = Sandbox.get_info(s.sandbox_id)
    snap = c.create_snapshot(name="warm")
    listed = [x.snapshot_id for x in Sandbox.list_snapshots().next_items()]
    restored = Sandbox.create(snap.snapshot_id)
    by_name = Sandbox.create("warm")
    deleted = Sandbox.delete_snapshot(snap.snapshot_id)
    deleted_again = Sandbox.delete_snapshot(snap.snapshot_id)
    return {
        "id": s.sandbox_id,
        "first": first,
        "again": again,
        "paused": paused,
        "state": state,
        "timeout_while_paused": timeout_while_paused,
        "connected": c.sandbox_id,
        "after": info.state.value,
        "left": (info.end_at - info.started_at).total_seconds(),
        "snapshot": snap.snapshot_id,
        "names": snap.names,
        "listed": listed,
        "restored": restored.sandbox_id,
        "by_name": by_name.sandbox_id,
        "deleted": deleted,
        "deleted_again": deleted_again,
    }


def not_offered():
    s = Sandbox.create(template="canary")
    return {
        "id": s.sandbox_id,
        "auto_pause": err(lambda: Sandbox.create(template="canary", lifecycle={"on_timeout": "pause"})),
        "unknown_template": err(lambda: Sandbox.create(template="no-such-template")),
        "env_vars": err(lambda: Sandbox.create(template="canary", envs={"FOO": "1"})),
    }


CASES = {f.__name__: f for f in [create, list_metadata, timeout_and_kill, idempotent,
                                 wrong_key, other_actor, connect_and_metrics, not_offered,
                                 pause_connect_snapshot]}

if __name__ == "__main__":
    print(json.dumps(CASES[sys.argv[1]](), default=str))
