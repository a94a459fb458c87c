#!/usr/bin/env python3
"""Types LINES commands into an interactive bash through a pseudo-terminal, each once bash shows
its prompt and at least PACE seconds apart, then `exit`: bash calls readline() exactly LINES + 1
times. Used by the demo and tests as a real, interactive workload."""
import os, pty, sys, time

lines = int(sys.argv[1]) if len(sys.argv) > 1 else 10
pace = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
bash = sys.argv[3] if len(sys.argv) > 3 else "/usr/bin/bash"

pid, fd = pty.fork()
if pid == 0:
    os.execv(bash, [bash, "--norc", "--noprofile", "-i"])

import select


def read_until_prompt(timeout):
    """Reads what bash writes until its prompt (`$ ` or `# `) shows that readline() is waiting
    for the next line, or `timeout` passes. Typing ahead of the prompt is not the same: input
    that arrives while bash is still setting up its terminal may be flushed, and a loaded
    machine (tests in parallel) can take longer than any fixed wait."""
    seen = b""
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], max(0.0, end - time.time()))
        if not r:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            return False
        if not data:
            return False
        seen = (seen + data)[-256:]
        if b"$ " in seen or b"# " in seen:
            return True
    return False


read_until_prompt(30)
for i in range(lines):
    os.write(fd, f"echo line {i}\n".encode())
    time.sleep(pace)
    read_until_prompt(30)
os.write(fd, b"exit\n")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
