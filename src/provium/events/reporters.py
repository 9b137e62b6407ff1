"""Turning file results into what people and CI read: text, JSON lines, JUnit XML.

The text layout follows the reference's runner output (`PASS path (N passed, ...)`,
failing tests indented under their file, one summary line); colour comes from
`rich` and disappears when the output is not a terminal.

The reporter builds `Line`s, which rich prints (they render as `rich.text.Text`).
When the output is not a terminal, `PlainConsole` writes them itself, byte for
byte as rich would, so a run that prints to a pipe or a file never imports rich
(about 20 ms of a one-file run's start).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from typing import TYPE_CHECKING, Any, Iterable

from provium import hostfiles
from provium.fsutil import printable
from provium.scheduler.results import FileResult, TestOutcome

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

    from rich.text import Text

_STYLE = {"PASS": "green", "FAIL": "bold red", "TIME": "bold yellow", "SKIP": "yellow", "NOT RUN": "yellow"}


def _label(r: FileResult) -> str:
    if r.not_run is not None:
        return "NOT RUN"
    if r.timed_out:
        return "TIME"
    return "PASS" if r.passed else "FAIL"


def _indent(text: str, n: int) -> list[str]:
    pad = " " * n
    return [pad + line for line in (text.splitlines() or [""])]


class Line:
    """One line of the text report: its text and the rich styles of its parts.

    Built the way the reporter used to build `rich.text.Text` (a base style, then
    appended parts), and turned into exactly that Text when rich prints it."""

    __slots__ = ("parts", "style")

    def __init__(self, text: str = "", style: str | None = None) -> None:
        self.style = style
        self.parts: list[tuple[str, str | None]] = [(text, None)] if text else []

    def append(self, text: str, style: str | None = None) -> Line:
        self.parts.append((text, style))
        return self

    @property
    def plain(self) -> str:
        return "".join(t for t, _ in self.parts)

    def __rich__(self) -> Text:
        from rich.text import Text

        t = Text(self.parts[0][0] if self.parts and self.parts[0][1] is None else "", style=self.style or "")
        for i, (text, style) in enumerate(self.parts):
            if i or style is not None:
                t.append(text, style=style)
        return t

    def __str__(self) -> str:
        return self.plain


def _plain_exact(text: str) -> bool:
    """Whether rich, writing to a file that is not a terminal, writes `text` as it is:
    it removes some control characters, expands tabs and drops trailing blanks
    past the console's width; a printable line without trailing blanks has none
    of those."""
    return text.isprintable() and not text[-1:].isspace()


class PlainConsole:
    """Prints report `Line`s to a file that is not a terminal, as rich's Console
    (highlight off, soft wrap on) would, without importing rich; anything it
    cannot reproduce exactly goes to a rich Console made on first need."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self._rich: Any = None

    @staticmethod
    def fits(file: Any) -> bool:
        """Whether rich would write plain text to `file` (no colour, no terminal
        codes): not a terminal, and no variable that makes rich treat it as one."""
        if "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ:
            return False
        import builtins

        if hasattr(builtins, "get_ipython"):  # rich colours Jupyter's output
            return False
        isatty = getattr(file, "isatty", None)
        try:
            return isatty is not None and not isatty()
        except ValueError:  # closed: rich treats it as no terminal too
            return True

    def rich(self) -> Any:
        if self._rich is None:
            from rich.console import Console

            self._rich = Console(file=self.file, highlight=False, soft_wrap=True)
        return self._rich

    def print(self, *objects: Any) -> None:
        if not objects:
            text = ""
        elif len(objects) == 1 and isinstance(objects[0], Line):
            text = objects[0].plain
        else:
            text = None  # a str has markup, several objects a separator: rich's job
        if text is None or (text and not _plain_exact(text)):
            self.rich().print(*objects)
            return
        self.file.write(text + "\n")
        self.file.flush()


def console_for(file: Any) -> Any:
    """The console the text report goes to: plain for a pipe or a file, rich for a terminal."""
    if PlainConsole.fits(file):
        return PlainConsole(file)
    from rich.console import Console

    return Console(file=file, highlight=False, soft_wrap=True)


class TextReporter:
    """Human-readable lines for one file, and the summary."""

    def __init__(self, console: Any, *, verbose: bool = False, quiet: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.quiet = quiet

    def shows(self, r: FileResult) -> bool:
        return not self.quiet or not r.passed

    def file_lines(self, r: FileResult, prefix: str = "") -> list[Line]:
        label = _label(r)
        head = Line(prefix)
        head.append(label, style=_STYLE[label])
        if r.not_run is not None:
            head.append(f" {printable(r.path)} ({r.not_run})")
            return [head]
        if r.chunk_error is not None and not r.tests:
            head.append(f" {printable(r.path)}")
            lines = [head]
            first, *rest = r.chunk_error.splitlines() or [""]
            lines.append(Line(f"  chunk_error: {first}"))
            lines += [Line(line) for line in _indent("\n".join(rest), 4)] if rest else []
            return lines
        p, f, s = r.summary()
        head.append(f" {printable(r.path)} ({p} passed, {f} failed, {s} skipped)")
        lines = [head]
        if r.chunk_error is not None:
            first, *rest = r.chunk_error.splitlines() or [""]
            lines.append(Line(f"  chunk_error: {first}"))
            lines += [Line(line) for line in _indent("\n".join(rest), 4)] if rest else []
        if r.timed_out and not any(t.status == "timed_out" for t in r.tests):
            lines.append(Line("  file timeout exceeded; the runner was killed"))
        for t in r.tests:
            lines += self._test_lines(t)
        # A failing file shows what it printed, as pytest shows a failing test's
        # captured output; a passing one only with -v.
        if (self.verbose or not r.passed) and r.output.strip():
            lines.append(Line("  output:", style="dim"))
            lines += [Line(line, style="dim") for line in _indent(r.output.rstrip(), 4)]
        return lines

    def _test_lines(self, t: TestOutcome) -> list[Line]:
        out: list[Line] = []
        if t.failed:
            label = "TIME" if t.status == "timed_out" else "FAIL"
            line = Line("    ")
            line.append(label, style=_STYLE[label])
            line.append(f" {t.name}")
            out.append(line)
            if t.message:
                out += [Line(x) for x in _indent(t.message, 8)]
            for entry in t.log:
                out += [Line(x, style="dim") for x in _indent(f"log: {entry}", 8)]
        elif self.verbose:
            line = Line("    ")
            if t.status == "skipped":
                line.append("SKIP", style=_STYLE["SKIP"])
                line.append(f" {t.name} ({t.message})" if t.message else f" {t.name}")
            else:
                line.append("PASS", style=_STYLE["PASS"])
                line.append(f" {t.name}")
            out.append(line)
            for entry in t.log:
                out += [Line(x, style="dim") for x in _indent(f"log: {entry}", 8)]
        return out

    def print_file(self, r: FileResult, prefix: str = "") -> None:
        if self.shows(r):
            for line in self.file_lines(r, prefix):
                self.console.print(line)

    def print_batch(self, results: Iterable[FileResult]) -> None:
        """Every file that ran, in path order.  Under --fail-fast the files never
        started are left out (the summary counts them); the reference also stops at
        the first failing file, but files run side by side, so a file listed after
        it may have failed too, and the summary counts it: it is printed."""
        for r in results:
            if r.not_run is not None:
                continue  # summarised in the last line
            self.print_file(r)

    def summary(self, results: list[FileResult], elapsed: float) -> Line:
        ran = [r for r in results if r.not_run is None]
        per_file = [r.summary() for r in ran]
        p, f, s = (sum(c[i] for c in per_file) for i in range(3))
        errored = sum(1 for r in ran if r.errored)
        not_run = len(results) - len(ran)
        text = Line(f"{len(ran)} file(s); ")
        text.append(f"{p} passed", style="green" if p else None)
        text.append(", ")
        text.append(f"{f} failed", style="bold red" if f else None)
        text.append(f", {s} skipped")
        if errored:
            text.append(f", {errored} file(s) errored", style="bold red")
        if not_run:
            text.append(f", {not_run} file(s) not run (--fail-fast)", style="yellow")
        text.append(f"; {elapsed:.2f}s")
        return text

    def print_summary(self, results: list[FileResult], elapsed: float) -> None:
        self.console.print()
        self.console.print(self.summary(results, elapsed))


# ---- JSON lines --------------------------------------------------------------------


def json_object(r: FileResult) -> dict:
    chunk_error = r.chunk_error if r.not_run is None else r.not_run
    return {
        "path": printable(r.path),
        "timeout": "timed_out" if r.timed_out else "in_time",
        "passed": r.passed,
        "chunk_error": chunk_error,
        "tests": [
            {
                "name": t.name,
                # The reference has three statuses; a test cut short by a timeout is a failure.
                "status": "failed" if t.status == "timed_out" else t.status,
                "message": t.message,
                "log": list(t.log),
                "duration_ns": t.duration_ns,
                "meta": _jsonable(t.meta),
            }
            for t in r.tests
        ],
        "duration_ns": r.duration_ns,
    }


def _jsonable(v: Any) -> Any:
    """Meta as JSON can carry it: byte strings as text (undecodable bytes as U+FFFD)."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, dict):
        return {str(_jsonable(k)): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN or infinity
    return v


def json_lines(results: Iterable[FileResult]) -> str:
    return "".join(json.dumps(json_object(r), ensure_ascii=False) + "\n" for r in results)


NO_FILES_JSON = {"type": "no_files", "message": "no *.test.lua files found"}


# ---- JUnit XML ---------------------------------------------------------------------

# Characters XML 1.0 forbids: C0 controls but tab/LF/CR, lone surrogates, U+FFFE, U+FFFF.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(s: str | None) -> str:
    """XML 1.0 cannot carry these characters at all (not even escaped): show them as U+FFFD."""
    return _XML_BAD.sub("\ufffd", s or "")


def _secs(ns: int) -> str:
    return f"{ns / 1e9:.3f}"


def junit_tree(results: list[FileResult], *, elapsed: float, suite_name: str = "provium") -> ET.ElementTree:
    import socket
    import xml.etree.ElementTree as ET

    """One <testsuite> per file, one <testcase> per test.

    A file-level problem (load error, crash, timeout, not run) becomes an
    <error> on a testcase named after the file, so CI shows it as a red entry.
    """
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    host = socket.gethostname()
    root = ET.Element("testsuites", name=suite_name)
    totals = dict(tests=0, failures=0, errors=0, skipped=0)
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=_xml_text(printable(r.path)), timestamp=stamp, hostname=host)
        counts = dict(tests=0, failures=0, errors=0, skipped=0)
        classname = printable(r.path).replace(os.sep, ".")  # as documented: the path with `/` as `.`
        for t in r.tests:
            case = ET.SubElement(suite, "testcase", name=_xml_text(t.name), classname=_xml_text(classname),
                                 time=_secs(t.duration_ns))
            counts["tests"] += 1
            if t.failed:
                counts["failures"] += 1
                msg = t.message or ("test timed out" if t.status == "timed_out" else "test failed")
                el = ET.SubElement(case, "failure", message=_xml_text(msg.splitlines()[0] if msg else ""),
                                   type="timeout" if t.status == "timed_out" else "failure")
                el.text = _xml_text(msg)
            elif t.status == "skipped":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=_xml_text(t.message or ""))
            if t.log:
                out = ET.SubElement(case, "system-out")
                out.text = _xml_text("\n".join(t.log))
        problem = None
        if r.not_run is not None:
            problem = ("not_run", r.not_run)
        elif r.timed_out:
            problem = ("timeout", "file timeout exceeded; the runner was killed")
        elif r.chunk_error is not None:
            problem = ("crashed" if r.crashed else "chunk_error", r.chunk_error)
        if problem is not None:
            case = ET.SubElement(suite, "testcase", name="(file)", classname=_xml_text(classname),
                                 time=_secs(r.duration_ns))
            counts["tests"] += 1
            counts["errors"] += 1
            el = ET.SubElement(case, "error", message=_xml_text(problem[1].splitlines()[0] if problem[1] else ""),
                               type=problem[0])
            el.text = _xml_text(problem[1])
        if r.output.strip():
            out = ET.SubElement(suite, "system-out")
            out.text = _xml_text(r.output)
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("time", _secs(r.duration_ns))
        # JUnit readers expect the attribute order name, tests, failures, ...; ElementTree keeps insertion order.
        suite.attrib = {k: suite.attrib[k] for k in
                        ("name", "tests", "failures", "errors", "skipped", "time", "timestamp", "hostname")}
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", f"{elapsed:.3f}")
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: str, results: list[FileResult], *, elapsed: float) -> None:
    """Written to a temp file and renamed (a CI job never reads half a report), or into
    a device or FIFO; never over anything else (see `provium.hostfiles`)."""
    import xml.etree.ElementTree as ET

    root = junit_tree(results, elapsed=elapsed).getroot()
    assert root is not None
    hostfiles.write_file(path, ET.tostring(root, encoding="utf-8", xml_declaration=True), what="--junit")
