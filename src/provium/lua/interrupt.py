"""Stopping Lua code that never calls back into Python (a busy loop).

A Lua count hook set for the whole run would cost about as much as the Lua
code itself (Lua 5.4 then checks every instruction).  So the hook is kept
*registered* but switched off, and the watchdog thread switches it on only
when a test's time is up, by calling `lua_sethook` directly through ctypes —
the one Lua C function documented as safe to call asynchronously (the `lua`
command-line interpreter does it from its SIGINT handler).

Every Lua thread has its own hook, so each coroutine registers itself when it
starts (see prelude.lua) and is kept alive by the prelude until its scope
ends; the addresses handed to `lua_sethook` therefore always point at live
threads.
"""

from __future__ import annotations

import ctypes
import threading

import lupa.lua54 as lupa_mod

LUA_MASKCOUNT = 1 << 3

_lib = ctypes.CDLL(lupa_mod.__file__)
_sethook = _lib.lua_sethook
_sethook.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
_sethook.restype = None
_gethook = _lib.lua_gethook
_gethook.argtypes = (ctypes.c_void_p,)
_gethook.restype = ctypes.c_void_p


def parse_address(text: bytes | str) -> int:
    s = text.decode() if isinstance(text, bytes) else text
    return int(s, 16)


class Interrupter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hookf: int | None = None
        self._threads: dict[int, str] = {}  # lua_State address -> scope tag
        self._armed = False

    def adopt_main(self, address: int) -> None:
        """The main thread's hook is registered (by debug.sethook); remember the
        C hook function it installed and switch it off."""
        with self._lock:
            self._hookf = _gethook(address)
            self._threads[address] = "main"
            _sethook(address, None, 0, 0)

    def thread_started(self, address: int, tag: str) -> None:
        """A coroutine registered its hook: switch it off, unless we are
        already interrupting (then leave it firing)."""
        with self._lock:
            self._threads[address] = tag
            if self._armed:
                _sethook(address, self._hookf, LUA_MASKCOUNT, 1)
            else:
                _sethook(address, None, 0, 0)

    def forget(self, tag: str) -> None:
        with self._lock:
            for addr in [a for a, t in self._threads.items() if t == tag]:
                del self._threads[addr]

    def arm(self) -> None:
        """From any thread: make every tracked Lua thread run its hook now."""
        with self._lock:
            self._armed = True
            if self._hookf:
                for addr in self._threads:
                    _sethook(addr, self._hookf, LUA_MASKCOUNT, 1)

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
            for addr in self._threads:
                _sethook(addr, None, 0, 0)
