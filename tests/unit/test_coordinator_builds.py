"""The coordinator's `build` op: a profile's build runs once for the whole run,
whichever file asks first; every asker gets its one outcome; a file waiting for
it counts as parked (its kill deadline moves back by the wait)."""

from __future__ import annotations

import selectors
import threading
import time

from provium.events.types import ResourceAmount
from provium.scheduler.coordinator import Client, Coordinator
from provium.scheduler.pool import Pool


class Served:
    """A coordinator driven by a selector loop on a thread, as the dispatcher drives it."""

    def __init__(self, path: str, build) -> None:
        self.sel = selectors.DefaultSelector()
        self.coord = Coordinator(path, Pool(ResourceAmount(1 << 30, 2)), self.sel, build=build)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            for key, mask in self.sel.select(0.05):
                kind, obj = key.data
                with self.lock:
                    self.coord.on_ready(kind, obj, mask)

    def start_file(self, owner: int) -> None:
        with self.lock:
            self.coord.file_started(owner)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.coord.close()


def test_one_build_per_profile_for_every_file_that_asks(tmp_path):
    calls: list[str] = []
    release = threading.Event()

    def build(name: str) -> None:
        calls.append(name)
        release.wait(10)
        if name == "broken":
            raise RuntimeError(f"profile `{name}`: build command failed (exit code 3)")

    served = Served(str(tmp_path / "c.sock"), build)
    try:
        served.start_file(0)
        served.start_file(1)
        a, b = Client(served.coord.path, 0), Client(served.coord.path, 1)
        fa = a.request("build", profile="k")[1]
        fb = b.request("build", profile="k")[1]
        time.sleep(0.3)
        assert not fa.done() and not fb.done()
        with served.lock:
            assert served.coord.waited(0) > 0.2  # waiting for the build counts as parked
        release.set()
        assert fa.result(10) == {"id": 1, "ok": True} and fb.result(10)["ok"] is True
        assert calls == ["k"]  # once, though two files asked
        bad = a.request("build", profile="broken")[1].result(10)
        assert bad["ok"] is False and "build command failed (exit code 3)" in bad["error"]
        again = b.request("build", profile="broken")[1].result(10)
        assert again == {**bad, "id": again["id"]} and calls == ["k", "broken"]  # the outcome is kept
        a.close()
        b.close()
    finally:
        served.close()


def test_a_run_that_builds_nothing_answers_at_once(tmp_path):
    served = Served(str(tmp_path / "c.sock"), None)
    try:
        served.start_file(0)
        c = Client(served.coord.path, 0)
        assert c.request("build", profile="k")[1].result(5)["ok"] is True
        c.close()
    finally:
        served.close()
