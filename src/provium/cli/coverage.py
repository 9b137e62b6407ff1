"""`provium-coverage`: which spec items (or any meta key) a saved event stream exercised.

    provium-coverage --from run.msgpack            # or `--from -` / no --from: stdin
    provium-coverage --from-socket /tmp/p.sock     # live, until provium closes the socket
    provium-coverage --by ticket --json

Exit 0 with a report; 2 when the stream cannot be read (missing file, torn or
invalid frame), with one line saying which and where.
"""

from __future__ import annotations

import socket
import sys

import click

from provium.events.coverage import CoverageReport
from provium.events.types import EventDecodeError, EventFrame, read_event
from provium.protocol import framing


def _read_all(stream, report: CoverageReport, where: str) -> None:
    n = 0
    while True:
        try:
            frame: EventFrame = read_event(stream)
        except framing.CleanEof:
            return
        except (framing.FrameError, EventDecodeError) as exc:
            raise click.ClickException(f"{where}: frame {n + 1}: {exc}") from exc
        report.add(frame)
        n += 1


@click.command("provium-coverage", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--from", "source", metavar="PATH", help="Event file written by --save-events (`-` = stdin; default stdin).")
@click.option("--from-socket", metavar="PATH", help="Read live from a provium --events-socket.")
@click.option("--by", default="spec", show_default=True, metavar="KEY", help="Test meta key to group by.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def coverage_command(source, from_socket, by, as_json):
    """Report how the tests in an event stream cover the values of a meta key."""
    if source and from_socket:
        raise click.UsageError("--from and --from-socket cannot be used together")
    report = CoverageReport(key=by)
    if from_socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(from_socket)
        except OSError as exc:
            raise click.ClickException(f"--from-socket: cannot connect to `{from_socket}`: {exc.strerror or exc}") from exc
        with s, s.makefile("rb") as f:
            _read_all(f, report, from_socket)
    elif source and source != "-":
        try:
            f = open(source, "rb")
        except OSError as exc:
            raise click.ClickException(f"--from: cannot open `{source}`: {exc.strerror or exc}") from exc
        with f:
            _read_all(f, report, source)
    else:
        _read_all(sys.stdin.buffer, report, "stdin")
    click.echo(report.render_json() if as_json else report.render())


def main(args=None) -> None:
    try:
        coverage_command.main(args=args, prog_name="provium-coverage", standalone_mode=False)
    except click.UsageError as exc:
        print(f"provium-coverage: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except click.ClickException as exc:
        print(f"provium-coverage: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(2)
    sys.exit(0)


if __name__ == "__main__":
    main()
