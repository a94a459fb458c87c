"""bench/python.sh's workload: N calls of libz's crc32 from Python code, 8 Python frames deep.

Times its own loop only (start-up, attach and exit are left out) and prints
`calls=N elapsed_ns=T`, as bench/targets/hammer.c does.
"""

import sys
import time
import zlib

N = int(sys.argv[1])
DATA = b"x"


def leaf(n):
    crc = zlib.crc32
    data = DATA
    for _ in range(n):
        crc(data)


def nest(depth, n):
    if depth == 0:
        return leaf(n)
    return nest(depth - 1, n)


start = time.perf_counter_ns()
nest(6, N)
print(f"calls={N} elapsed_ns={time.perf_counter_ns() - start}")
