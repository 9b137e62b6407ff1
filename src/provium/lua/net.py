"""The Lua binding of bridges, NICs and captures (translation only: `host.bridge` validates)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..host.bridge import Bridge, Nic
from .args import Args
from .binding import Binding, method
from .convert import is_table, key_text, lua_type, text, to_py
from .errors import LuaApiError
from .objects import StreamBinding, VmBinding

if TYPE_CHECKING:
    from .state import FileState


def _member(v: Any, method_name: str) -> Any:
    """A VM binding becomes the host VM; a string stays a name; anything else is refused."""
    if isinstance(v, VmBinding):
        return v.host
    if isinstance(v, (bytes, str)):
        return text(v, f"{method_name}: VM name")
    if isinstance(v, Binding):
        raise LuaApiError(f"bridge expected a VM userdata or string ({method_name} got a {v.KIND})")
    raise LuaApiError(f"bridge expected a VM userdata or string, got {lua_type(v)} ({method_name})")


def _fields(tbl: Any, method_name: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tbl.items():
        name = key_text(k)
        if name is None or name not in allowed:
            shown = name if name is not None else repr(k)
            raise LuaApiError(f"{method_name}: unknown key `{shown}` in the table "
                              f"(valid: {', '.join(allowed)})")
        out[name] = v
    return out


def _directional(tbl: Any, method_name: str, value_key: str | None, extra: tuple[str, ...] = ()) -> dict:
    keys = ("from", "to") + ((value_key,) if value_key else ()) + extra
    f = _fields(tbl, method_name, keys)
    for k in keys[:3 if value_key else 2]:
        if f.get(k) is None:
            what = "directional form needs" if value_key else "needs"
            raise LuaApiError(f"{method_name}: {what} `{k}`")
    f["from"] = _member(f["from"], method_name)
    f["to"] = _member(f["to"], method_name)
    return f


class BridgeBinding(Binding):
    KIND = "bridge"

    def __init__(self, state: FileState, bridge: Bridge) -> None:
        super().__init__(state)
        self.host = bridge

    def __str__(self) -> str:
        return str(self.host)

    @method()
    def name(self, *a: Any) -> str:
        return self.host.name

    # ---- membership ----------------------------------------------------------------

    @method()
    def attach(self, *a: Any) -> None:
        args = Args("bridge:attach", a, max_args=1)
        v = args.get(1)
        if is_table(v):
            items = [v[i] for i in range(1, len(v) + 1)]
            self.host.attach([_member(x, "bridge:attach") for x in items])  # all checked before any attach
        else:
            self.host.attach(_member(v, "bridge:attach"))

    @method()
    def detach(self, *a: Any) -> None:
        args = Args("bridge:detach", a, max_args=1)
        self.host.detach(_member(args.get(1), "bridge:detach"))

    @method()
    def members(self, *a: Any) -> list:
        return self.host.members()

    @method()
    def address(self, *a: Any) -> str | None:
        args = Args("bridge:address", a, max_args=1)
        return self.host.address_of(_member(args.get(1), "bridge:address"))

    @method()
    def hostname(self, *a: Any) -> str:
        args = Args("bridge:hostname", a, max_args=1)
        return self.host.hostname_of(_member(args.get(1), "bridge:hostname"))

    # ---- partitions -----------------------------------------------------------------

    def _pair(self, op: str, a: tuple) -> tuple[Any, Any] | dict:
        n = len(a)
        while n and a[n - 1] is None:
            n -= 1
        if n == 1 and is_table(a[0]):
            return _directional(a[0], f"bridge:{op}", None)
        if n != 2:
            raise LuaApiError(f"bridge:{op}: expected (a, b) or ({{from=a, to=b}})")
        return _member(a[0], f"bridge:{op}"), _member(a[1], f"bridge:{op}")

    @method()
    def partition(self, *a: Any) -> None:
        p = self._pair("partition", a)
        if isinstance(p, dict):
            self.host.partition_directional(p["from"], p["to"])
        else:
            self.host.partition(*p)

    @method()
    def unpartition(self, *a: Any) -> None:
        p = self._pair("unpartition", a)
        if isinstance(p, dict):
            self.host.unpartition_directional(p["from"], p["to"])
        else:
            self.host.unpartition(*p)

    @method()
    def partition_all(self, *a: Any) -> None:
        self.host.partition_all()

    @method()
    def restore_all(self, *a: Any) -> None:
        self.host.restore_all()

    @method()
    def is_partitioned(self, *a: Any) -> bool:
        args = Args("bridge:is_partitioned", a, max_args=2)
        return self.host.is_partitioned(_member(args.get(1), "bridge:is_partitioned"),
                                        _member(args.get(2), "bridge:is_partitioned"))

    @method()
    def isolate(self, *a: Any) -> None:
        self.host.isolate(_member(Args("bridge:isolate", a, max_args=1).get(1), "bridge:isolate"))

    @method()
    def unisolate(self, *a: Any) -> None:
        self.host.unisolate(_member(Args("bridge:unisolate", a, max_args=1).get(1), "bridge:unisolate"))

    @method()
    def is_isolated(self, *a: Any) -> bool:
        return self.host.is_isolated(_member(Args("bridge:is_isolated", a, max_args=1).get(1),
                                             "bridge:is_isolated"))

    # ---- impairments ----------------------------------------------------------------

    @method()
    def add_latency(self, *a: Any) -> None:
        args = Args("bridge:add_latency", a, max_args=2)
        v = args.get(1)
        if is_table(v):
            f = _directional(v, "bridge:add_latency", "ms", ("jitter",))
            self.host.add_directional_latency(f["from"], f["to"], to_py(f["ms"]), to_py(f.get("jitter")),
                                              method="bridge:add_latency")
        else:
            self.host.add_latency(to_py(v), to_py(args.get(2)))

    @method()
    def add_directional_latency(self, *a: Any) -> None:
        args = Args("bridge:add_directional_latency", a, max_args=1)
        v = args.get(1)
        if not is_table(v):
            raise LuaApiError(f"bridge:add_directional_latency: expected a table {{from=, to=, ms=}}, got {lua_type(v)}")
        f = _directional(v, "bridge:add_directional_latency", "ms", ("jitter",))
        self.host.add_directional_latency(f["from"], f["to"], to_py(f["ms"]), to_py(f.get("jitter")))

    @method()
    def drop_rate(self, *a: Any) -> None:
        args = Args("bridge:drop_rate", a, max_args=1)
        v = args.get(1)
        if is_table(v):
            f = _directional(v, "bridge:drop_rate", "p")
            self.host.directional_drop_rate(f["from"], f["to"], to_py(f["p"]), method="bridge:drop_rate")
        else:
            self.host.drop_rate(to_py(v))

    @method()
    def directional_drop_rate(self, *a: Any) -> None:
        args = Args("bridge:directional_drop_rate", a, max_args=1)
        v = args.get(1)
        if not is_table(v):
            raise LuaApiError(f"bridge:directional_drop_rate: expected a table {{from=, to=, p=}}, got {lua_type(v)}")
        f = _directional(v, "bridge:directional_drop_rate", "p")
        self.host.directional_drop_rate(f["from"], f["to"], to_py(f["p"]))

    @method()
    def bandwidth_limit(self, *a: Any) -> None:
        args = Args("bridge:bandwidth_limit", a, max_args=1)
        v = args.get(1)
        if is_table(v):
            f = _directional(v, "bridge:bandwidth_limit", "bps")
            self.host.directional_bandwidth(f["from"], f["to"], to_py(f["bps"]))
        else:
            self.host.bandwidth_limit(to_py(v))

    @method()
    def reset(self, *a: Any) -> None:
        self.host.reset()

    @method()
    def seed(self, *a: Any) -> None:
        args = Args("bridge:seed", a, max_args=1)
        self.host.reseed(to_py(args.get(1)))

    @method()
    def latency_ms(self, *a: Any) -> int:
        return self.host.latency_ms()

    @method()
    def jitter_ms(self, *a: Any) -> int:
        return self.host.jitter_ms()

    @method()
    def drop_rate_pct(self, *a: Any) -> Any:
        return self.host.drop_rate_pct()

    @method()
    def bandwidth_bps(self, *a: Any) -> int:
        return self.host.bandwidth_bps()

    # ---- topology -------------------------------------------------------------------

    @method()
    def route(self, *a: Any) -> None:
        args = Args("bridge:route", a, max_args=1)
        v = args.get(1)

        def one(x: Any, in_list: bool) -> str:
            if isinstance(x, BridgeBinding):
                return x.host.name
            if isinstance(x, (bytes, str)):
                return text(x, "bridge:route")
            if in_list:
                raise LuaApiError("bridge:route: list entries must be bridge or string")
            if isinstance(x, Binding):
                raise LuaApiError("bridge:route: expected bridge userdata or string")
            raise LuaApiError("bridge:route: expected bridge|string|list")

        names = [one(v[i], True) for i in range(1, len(v) + 1)] if is_table(v) else [one(v, False)]
        self._state.warn_once(
            f"route:{self.host.name}",
            f"provium: bridge:route on `{self.host.name}` is recorded only: the switch does not forward "
            "between bridges yet (cross-bridge traffic does not flow)")
        self.host.route(names)

    @method()
    def routes(self, *a: Any) -> list:
        return self.host.routes()

    @method()
    def enable_uplink(self, *a: Any) -> None:
        args = Args("bridge:enable_uplink", a, max_args=1)
        self.host.enable_uplink(to_py(args.get(1), empty="dict"))

    @method()
    def disable_uplink(self, *a: Any) -> None:
        self.host.disable_uplink()

    @method()
    def uplink_address(self, *a: Any) -> str | None:
        return self.host.uplink_address()

    # ---- NICs and capture -----------------------------------------------------------

    @method()
    def nic(self, *a: Any) -> Any:
        args = Args("bridge:nic", a, max_args=1)
        m = _member(args.get(1), "bridge:nic")
        if isinstance(m, str):
            return self._state.bind(Nic(self.host, m))
        return self._state.bind(Nic(self.host, m.name, m))

    @method()
    def capture(self, *a: Any) -> Any:
        args = Args("bridge:capture", a, max_args=1)
        opts = args.get(1)
        if opts is not None and not is_table(opts):
            raise LuaApiError(f"bridge:capture: opts must be a table, got {lua_type(opts)}")
        cap = self.host.capture(to_py(opts, empty="dict") if opts is not None else None)
        return self._state.register("stream", cap)

    @method()
    def close(self, *a: Any) -> None:
        self.host.close()


class NicBinding(Binding):
    KIND = "nic"

    def __init__(self, state: FileState, nic: Nic) -> None:
        super().__init__(state)
        self.host = nic

    def __str__(self) -> str:
        return str(self.host)

    @method()
    def counters(self, *a: Any) -> dict:
        return self.host.counters()

    @method()
    def capture(self, *a: Any) -> Any:
        args = Args("nic:capture", a, max_args=1)
        opts = args.get(1)
        if opts is not None and not is_table(opts):
            raise LuaApiError(f"nic:capture: opts must be a table, got {lua_type(opts)}")
        cap = self.host.capture(to_py(opts, empty="dict") if opts is not None else None)
        return self._state.register("stream", cap)

    @method()
    def disconnect(self, *a: Any) -> None:
        self.host.disconnect()

    @method()
    def reconnect(self, *a: Any) -> None:
        self.host.reconnect()

    @method()
    def is_connected(self, *a: Any) -> bool:
        return self.host.is_connected()

    @method()
    def vm_name(self, *a: Any) -> str:
        return self.host.vm_name

    @method()
    def bridge(self, *a: Any) -> str:
        return self.host.bridge.name


class CaptureBinding(StreamBinding):
    KIND = "capture"

    @method()
    def path(self, *a: Any) -> str:
        return self.host.path()

    @method()
    def frames(self, *a: Any) -> int:
        return self.host.frames()
