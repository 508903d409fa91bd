"""The demo's two cluster steps (EAR verified offline, the extender's filter) run against a real
verifier whose inventory tells the story — and fail the story when it does not. No VM here: the
inventory is written directly; the VM boots are the demo's and the VM suite's business."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from testkit.service import run_server
from tests.test_service_api import add_node
from verifier.service.config import ServiceConfig
from verifier.store import Store, upgrade
from verifier.store.models import Node

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


demo_mod = _load("_demo")


def _inventory(db: str, tampered_state: str) -> None:
    store = Store(db)
    upgrade(store)
    now = dt.datetime.now(dt.UTC)
    for name in ("debian-sb-1", "debian-cloud-1", "gce-ubuntu-1", "thinkpad-1"):
        add_node(store, name, state="trusted", success=now)
    add_node(store, "debian-sb-tampered", state=tampered_state, success=now)
    with store.write() as s:
        for node in s.query(Node):
            node.reason = "all 29 checks passed"
        tampered = s.query(Node).filter_by(name="debian-sb-tampered").one()
        if tampered_state == "untrusted":
            tampered.reason = "cmdline_not_approved: PCR8 event 45: kernel command line"
    store.close()


@pytest.mark.parametrize("tampered_state", ["untrusted", "trusted"])
def test_the_demo_cluster_steps_check_the_story(tmp_path: Path, tampered_state: str) -> None:
    db = str(tmp_path / "verifier.db")
    _inventory(db, tampered_state)
    config = ServiceConfig(database=db, workers=1, extender_enabled=True)
    (tmp_path / "verifier.yaml").write_text(f"database: {db}\n")
    with run_server(config) as url:
        demo = demo_mod.Demo(work=tmp_path, quiet=True)
        demo.url = url
        admin = demo.verifier("token", "create", "--role", "admin", "--json", capture=True)
        demo.admin = __import__("json").loads(admin)["token"]
        demo_mod.ear_offline(demo)
        demo_mod.extender_filter(demo)
    wrong = {(m.step, m.node) for m in demo.mismatches}
    if tampered_state == "untrusted":
        assert wrong == set()
        assert [c["ok"] for c in demo.checked] == [True, True]
    else:  # a tampered node that looks trusted must make the demo fail
        assert wrong == {("ear", "debian-sb-tampered"), ("extender", "debian-sb-tampered")}
