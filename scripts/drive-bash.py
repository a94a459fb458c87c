#!/usr/bin/env python3
"""Types LINES commands into an interactive bash through a pseudo-terminal, one every PACE
seconds, then `exit`: bash calls readline() exactly LINES + 1 times. Used by the demo and tests
as a real, interactive workload."""
import os, pty, sys, time

lines = int(sys.argv[1]) if len(sys.argv) > 1 else 10
pace = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
bash = sys.argv[3] if len(sys.argv) > 3 else "/usr/bin/bash"

pid, fd = pty.fork()
if pid == 0:
    os.execv(bash, [bash, "--norc", "--noprofile", "-i"])

def drain(timeout):
    end = time.time() + timeout
    while time.time() < end:
        import select
        r, _, _ = select.select([fd], [], [], max(0.0, end - time.time()))
        if not r:
            return
        try:
            if not os.read(fd, 4096):
                return
        except OSError:
            return

drain(0.3)
for i in range(lines):
    os.write(fd, f"echo line {i}\n".encode())
    drain(pace)
os.write(fd, b"exit\n")
drain(0.5)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
