"""Task functions that the YAML tests reference as ``tests.engine.helpers:NAME``."""


async def double(x):
    return x * 2


def add_one(x):
    return x + 1


def plan(n):
    return list(range(n))


def total(values):
    return sum(values) if isinstance(values, list) else sum(values.values())


def exact(inp, out, expected):
    return 1.0 if out == expected else 0.0


NOT_CALLABLE = 3


def parity(x):
    return x % 2
