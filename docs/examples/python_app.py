"""The guide's Python example (docs/guide.md, "Python"): a small batch job whose time goes
into zlib, reached from three places in the Python code."""

import json
import zlib


def load(n):
    return [json.dumps({"id": i, "name": f"item-{i}", "tags": ["a", "b"] * (i % 7)}) for i in range(n)]


def checksum(records):
    return [zlib.crc32(r.encode()) for r in records]


def pack(records):
    blob = "\n".join(records).encode()
    return zlib.compress(blob, 6)


def verify(packed, sums):
    records = zlib.decompress(packed).decode().split("\n")
    return checksum(records) == sums


def main():
    for _ in range(20):
        records = load(2000)
        sums = checksum(records)
        packed = pack(records)
        assert verify(packed, sums)


if __name__ == "__main__":
    main()
