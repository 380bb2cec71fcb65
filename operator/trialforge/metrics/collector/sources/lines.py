"""The ``stdout`` and ``file`` sources: a text file followed as it grows."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trialforge.api.observation import Observation
from trialforge.metrics.collector.config import Config
from trialforge.metrics.collector.journal import Journal
from trialforge.metrics.collector.sources.base import MAX_LINE, MetricsSource, register
from trialforge.metrics.contract import STDOUT_FILE
from trialforge.metrics.parsers import ObservationReader

log = logging.getLogger("trialforge.collector")
READ_CHUNK = 1 << 18

_NEWLINE_RE = re.compile(r"\r\n|\r|\n")


def _complete_end(buf: bytes) -> int:
    """Where the complete lines of ``buf`` end (a trailing bare CR may be half a CRLF)."""
    i = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
    if i >= 0 and i == len(buf) - 1 and buf[i] == 0x0D:
        i = max(buf.rfind(b"\n", 0, i), buf.rfind(b"\r", 0, i))
    return i + 1


@register("file")
class LineTail(MetricsSource):
    """Follows one growing text file by byte offset: rotation, truncation, partial lines.

    ``position()`` is where the lines already handed out end, so a collector
    restarted from it reads the unfinished last line again rather than losing
    it.  A rename-rotated file is read to its end before the new one is opened
    (also after a restart: the old inode is looked for next to the path).
    """

    def __init__(self, path: Path, reader: ObservationReader, saved: Mapping[str, Any]) -> None:
        self.path = path
        self.reader = reader
        self.inode: int | None = saved.get("inode")
        self.offset: int = int(saved.get("offset") or 0)
        self._file: Any = None
        self._buf = b""
        self._discarding = bool(saved.get("discarding"))
        self.rotations = int(saved.get("rotations") or 0)
        self.truncations = int(saved.get("truncations") or 0)

    @classmethod
    def open(
        cls, cfg: Config, journal: Journal, reader: ObservationReader, saved: Mapping[str, Any]
    ) -> LineTail:
        return cls(cls.path_of(cfg), reader, saved)

    @staticmethod
    def path_of(cfg: Config) -> Path:
        """``TRIALFORGE_METRICS_PATH``; a relative one is on the shared volume."""
        return cfg.shared_path(cfg.path)

    def position(self) -> dict[str, Any]:
        return {
            "inode": self.inode,
            "offset": self.offset,
            "discarding": self._discarding,
            "rotations": self.rotations,
            "truncations": self.truncations,
        }

    def _open(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if self.inode is not None and st.st_ino != self.inode:
            old = self._find_inode(self.inode)
            if old is not None:  # resumed after a rotation: finish the old file first
                self._file = open(old, "rb")  # noqa: SIM115
                self._file.seek(self.offset)
                return True
            self.inode, self.offset = None, 0
        self._file = open(self.path, "rb")  # noqa: SIM115
        self.inode = os.fstat(self._file.fileno()).st_ino
        self._file.seek(self.offset)
        return True

    def _find_inode(self, inode: int) -> Path | None:
        with contextlib.suppress(OSError), os.scandir(self.path.parent) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.inode() == inode:
                    return Path(entry.path)
        return None

    def poll(self, limit: int = 1 << 30, final: bool = False) -> list[Observation]:
        """What the file holds now, up to about ``limit`` observations."""
        if self._file is None and not self._open():
            return []
        found: list[Observation] = []
        at_end = False
        while len(found) < limit:
            chunk = self._file.read(READ_CHUNK)
            if chunk:
                self._buf += chunk
                found += self._lines()
                continue
            # At the end of this file: rotated, truncated, or just nothing new?
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            own = os.fstat(self._file.fileno())
            if st is not None and st.st_ino != own.st_ino:
                found += self._end_of_file()  # rotated: the old one is complete
                self._file.close()
                self._file, self.inode, self.offset = None, None, 0
                self.rotations += 1
                if not self._open():
                    at_end = True
                    break
                continue
            if own.st_size < self.offset + len(self._buf):
                log.warning("%s was truncated; reading it from the start", self.path)
                self.truncations += 1
                self._buf, self._discarding, self.offset = b"", False, 0
                self._file.seek(0)
                continue
            at_end = True
            break
        if final and at_end:
            found += self._end_of_file()
        return found

    def _end_of_file(self) -> list[Observation]:
        """The file will not grow: its unterminated last line is a line."""
        rest, self._buf = self._buf, b""
        self.offset += len(rest)
        discarding, self._discarding = self._discarding, False
        if not rest or discarding:
            return []
        obs = self.reader.feed_line(rest.decode("utf-8", "replace"))
        return [] if obs is None else [obs]

    def _lines(self) -> list[Observation]:
        end = _complete_end(self._buf)
        found: list[Observation] = []
        if end:
            text = self._buf[:end].decode("utf-8", "replace")
            self._buf = self._buf[end:]
            self.offset += end
            lines = _NEWLINE_RE.split(text)[:-1]  # text ends with a newline
            if self._discarding:  # the tail of an over-long line, already counted
                self._discarding = False
                lines = lines[1:]
            for line in lines:
                obs = self.reader.feed_line(line)
                if obs is not None:
                    found.append(obs)
        if len(self._buf) > MAX_LINE:
            if not self._discarding:
                self.reader.lines += 1
                self.reader.junk += 1
                self.reader.last_junk = self._buf[:200].decode("utf-8", "replace")
            self.offset += len(self._buf)
            self._buf, self._discarding = b"", True
        return found

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@register("stdout")
class StdoutTail(LineTail):
    """The trainer's output, which its entrypoint copies onto the shared volume."""

    @staticmethod
    def path_of(cfg: Config) -> Path:
        return cfg.shared_dir / STDOUT_FILE
