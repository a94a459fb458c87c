# The corpus of tests/naming.rs: code objects whose location tables use every entry form
# (short, one-line, no-column, long, no-location), compared with CPython's own co_lines().
# dump_lines.py appends a function longer than 255 lines and one with 400-line gaps.
import contextlib


def grüße(name):
    return "hello " + name


def 関数():
    return [c for c in "abc" if c != "b"]


class Outer:
    class Inner:
        def method(self, a,
                   b):
            total = (a +
                     b)
            return total

    @staticmethod
    def deco():
        return lambda q: q * 2


def gen(n):
    for i in range(n):
        yield i
    yield from range(3)


def handler():
    try:
        raise ValueError("x")
    except ValueError as e:
        with contextlib.suppress(Exception):
            return str(e)
    finally:
        pass


def wide():
    return {"key_a": 1, "key_b": 2, "key_c": 3, "key_d": 4, "key_e": 5, "key_f": 6, "key_g": 7, "key_h": 8, "key_i": 9}["key_i"]


def loop(xs):
    total = 0
    while xs:
        total += xs.pop()
    return total


async def coro():
    return await other()


async def other():
    return 1
