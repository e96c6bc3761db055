"""Shared pytest configuration: each stage keeps its fixtures in tests/fixtures/<stage>.py."""

pytest_plugins = [
    "tests.fixtures.ports",
    "tests.fixtures.fake_llm",
    "tests.fixtures.llm",
    "tests.fixtures.postgres",
    "tests.fixtures.collector",
    "tests.fixtures.fuzz",
]
