"""Prints what tests/naming.rs compares with, for every code object of a source file and of
two functions appended to it (one longer than 255 lines, one with 400-line gaps: the long entry
forms): the qualname, co_firstlineno, co_linetable in hex, the code's length in bytes, and the
line of each code unit twice over, from co_lines() and from co_positions() (CPython's own
decoders). The first line is sys.hexversion."""
import sys


def walk(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            yield from walk(const)


path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    source = f.read()
source += "\n\ndef long_function():\n"
source += "".join(f"    x{i} = {i} + len(str({i}))\n" for i in range(300))
source += "    return x0\n" + "\n" * 400
source += "def after_a_gap(a):\n    b = a\n" + "\n" * 400 + "    return b\n"
top = compile(source, path, "exec")
print(sys.hexversion)
for co in walk(top):
    units = len(co.co_code) // 2
    by_lines = [None] * units
    for start, end, line in co.co_lines():
        for unit in range(start // 2, end // 2):
            by_lines[unit] = line
    by_positions = [p[0] for p in co.co_positions()]
    assert len(by_positions) == units, (co.co_qualname, len(by_positions), units)
    show = lambda lines: ",".join("-" if l is None else str(l) for l in lines)
    print("\t".join([co.co_qualname, str(co.co_firstlineno), co.co_linetable.hex(),
                     str(len(co.co_code)), show(by_lines), show(by_positions)]))
