"""Disks: image files, provium's NBD server, the fault model and host-side sector I/O.

What this package owns
- `spec`: reading a disk declaration into `vmm.base.DiskSpec` (one parser for
  provium.toml, boot options and `attach_disk`).
- `image`: creating the files provium makes (a `scratch` image of a size, a copy of a
  `template`) inside a directory it is handed, and reading/writing 512-byte sectors
  of an image (`SectorFile`).
- `faults`: the fault switchboard of one disk (EIO on reads/writes, slow I/O, after
  n requests, on a sector range) shared by the guest path and the host-side view.
- `nbd`: an asyncio NBD server (fixed newstyle handshake, simple replies) serving one
  image file on a unix socket to QEMU, with a write-back overlay that a power cut
  drops (what the guest flushed, or wrote with FUA, survives; the rest is lost).

What it never touches
- QEMU and the guest: no QMP, no command lines (the VMM backends attach what the host
  layer hands them), no agent calls.
- Files it was not given: a `path` image is the user's; it is read and written, never
  created, truncated or deleted.  A template is only read.

Who cleans up
- `host/disk.py` owns one `VmDisks` per VM: the VM's disk directory (scratch images,
  template copies, NBD sockets) and its NBD servers.  It closes the servers and removes
  the directory when the VM shuts down; `path` images stay.  Every server task is
  owned by its `NbdServer`, whose `close()` waits for them.

Why a hand-written NBD server: the protocol subset QEMU needs is small (a handshake and
five commands), faults and the power-cut overlay must sit inside the request loop, and
the server must run on the runner's own asyncio loop with no extra process to leak.
`nbdkit` (a C server with a Python plugin) would add a process per disk and a system
package, and its fault filters cannot express a power cut of unflushed writes.
"""
