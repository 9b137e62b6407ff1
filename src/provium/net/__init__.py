"""provium's virtual networks: the bridge graph, the userspace switch, pcap, the uplink.

Contract of this package
------------------------
* **What it owns.**  The *graph* of each bridge (members, partitions, isolation,
  impairments, routes, uplink intent: `graph.BridgeGraph`), the *switch* that
  forwards real Ethernet frames between guest NICs according to that graph
  (`switch.Switch`: one per session, its own thread and asyncio loop, one unix
  socket per NIC), the pcap captures it writes (`pcap`), and the uplink helper
  process (`uplink`: a QEMU user-mode network reaching only the host's loopback).
* **What it never touches.**  VMs, agents, Lua, the host's own network
  configuration: no TAP, no Linux bridge, no `tc`, no `nft`, no routes, nothing
  needing privileges.  Guests reach the switch only through the unix sockets
  QEMU's `-netdev stream` connects to; the uplink's slirp stack is configured
  with `restrict=on` and explicit forwards to 127.0.0.1 only.  `host/bridge.py`
  is the layer that knows what a VM is and drives QMP (link up/down, hot-plug).
* **Who cleans up.**  The `Switch` owns its thread, its sockets, its scratch
  directory (`$TMPDIR/provium-net-<pid>/`) and every uplink process it started;
  `Switch.close()` (called by `Session.close()`) stops them all and removes the
  directory.  A bridge's `close()` (scope end) removes its ports and captures.
  Uplink processes die with the runner (`PR_SET_PDEATHSIG`), and scratch roots
  of dead runners are swept when the next switch starts.
"""
