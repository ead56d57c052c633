"""run.py runs each command as a child: Ctrl-C reaches that child exactly once, whether it was typed in
a terminal (the terminal signals the whole foreground group) or sent to run.py alone, and run.py
exits with the child's code, printing nothing of its own."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import termios
import time

from tests.helpers import ROOT

# The child counts the SIGINTs it gets (for half a second after the first) and exits with that count.
CHILD = """
import signal, sys, time
got = []
signal.signal(signal.SIGINT, lambda *_: got.append(1))
print("ready", flush=True)
while not got:
    time.sleep(0.01)
time.sleep(0.5)
sys.exit(len(got))
"""

# run.py's run() on a command, as `python3 run.py demo` runs the CLI.
PARENT = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import run
sys.exit(run.run([sys.executable, "-c", {CHILD!r}]))
"""


def _take_the_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _start(tty: int | None) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdin=tty, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_take_the_terminal if tty is not None else None)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_ctrl_c_typed_in_a_terminal_reaches_the_command_once_and_run_py_exits_with_its_code() -> None:
    terminal, tty = os.openpty()
    try:
        proc = _start(tty)
        os.close(tty)
        os.write(terminal, b"\x03")
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(terminal)
    assert proc.returncode == 1, err  # one SIGINT, and the child's own exit code
    assert err == ""


def test_sigint_sent_to_run_py_alone_is_passed_on_once() -> None:
    proc = _start(None)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "Traceback" not in err and err == ""


def test_a_command_ended_by_a_signal_makes_run_py_exit_128_plus_its_number() -> None:
    script = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import run
sys.exit(run.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert res.returncode == 128 + signal.SIGTERM, res.stderr
