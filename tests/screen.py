"""A tiny terminal for tests: runs a command on a pseudo-terminal (its controlling terminal, so
a Ctrl-C typed into it is a real SIGINT from the line discipline) and replays what it wrote
into rows of text, the way a terminal shows them. Only what the bars use is understood:
text, \\r, \\n, \\b, ESC[nA (up), ESC[nB (down), ESC[K (erase to the end of the line);
other escape sequences are skipped."""

import fcntl
import os
import re
import select
import struct
import termios
import time

_CSI = re.compile(rb"\x1b\[([0-9;?]*)([A-Za-z])")


class Screen:
    def __init__(self, columns):
        self.columns = columns
        self.rows = [[]]
        self.row = self.col = 0

    def feed(self, data):
        i = 0
        while i < len(data):
            m = _CSI.match(data, i)
            if m:
                self._csi(m.group(1), m.group(2))
                i = m.end()
                continue
            ch = data[i:i + 1]
            i += 1
            if ch == b"\r":
                self.col = 0
            elif ch == b"\n":
                self.row += 1
                self.col = 0  # (the pseudo-terminal's onlcr: a newline is CR LF)
            elif ch == b"\b":
                self.col = max(0, self.col - 1)
            elif ch == b"\x1b":
                continue
            elif ch >= b" ":
                self._put(ch.decode("latin-1"))

    def _csi(self, arg, final):
        n = int(arg) if arg.isdigit() else 1
        if final == b"A":
            self.row = max(0, self.row - n)
        elif final == b"B":
            self.row += n
        elif final == b"K":
            line = self._line()
            del line[self.col:]

    def _line(self):
        while len(self.rows) <= self.row:
            self.rows.append([])
        return self.rows[self.row]

    def _put(self, ch):
        if self.col >= self.columns:  # auto-wrap
            self.row += 1
            self.col = 0
        line = self._line()
        while len(line) < self.col:
            line.append(" ")
        if self.col < len(line):
            line[self.col] = ch
        else:
            line.append(ch)
        self.col += 1

    def text(self):
        """The rows as they look, trailing blanks and empty rows at the end left out."""
        rows = ["".join(r).rstrip() for r in self.rows]
        while rows and not rows[-1]:
            rows.pop()
        return rows


class Terminal:
    """A command on its own pseudo-terminal of `columns` x `lines`."""

    def __init__(self, argv, env, columns=120, lines=40):
        import pty

        self.columns = columns
        self.raw = b""
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal, stdin, stdout and stderr
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.status = None

    def read(self, timeout=0.1):
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return b""
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # the child is gone and the pty closed
            return b""
        self.raw += chunk
        return chunk

    def wait_for(self, pattern, timeout):
        """Read until `pattern` (bytes regex) is in the output; True if it came in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.raw):
                return True
            self.read()
        return bool(re.search(pattern, self.raw))

    def type(self, data):
        os.write(self.fd, data)

    def wait(self, timeout):
        """Read to the end and reap the child; its exit code (None if it did not end in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read()
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self.read(0.05):
                    pass
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
        return None

    def close(self):
        if self.status is None:
            try:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
        os.close(self.fd)

    def screen(self):
        s = Screen(self.columns)
        s.feed(self.raw)
        return s
