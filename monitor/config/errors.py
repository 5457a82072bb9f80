"""Config problems: collected, then raised together as one `ConfigError`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "KeyPath", "Problem", "format_key"]

# A key path as the locator and the loader see it: table keys are str,
# indexes into arrays (of tables or of inline values) are int.
KeyPath = tuple[str | int, ...]

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def format_key(path: KeyPath) -> str:
    """`("contracts", 2, "days")` -> `contracts[2].days`.

    Keys that are not TOML bare keys are quoted so the path can be pasted
    back into a search of the file.
    """
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
            continue
        text = part if part and set(part) <= _BARE_KEY_CHARS else f'"{part}"'
        out.append(f".{text}" if out else text)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration."""

    file: str  # as given by the user (main) or as found by `include` (relative)
    line: int | None
    key: str  # key path like `contracts[2].days`
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"config error: {where}: {self.key}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; `errors` holds one line per problem.

    Each line is exactly `config error: <file>[:<line>]: <key path>: <what>`,
    ready to print.  `problems` has the same in structured form.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        self.errors: list[str] = [str(p) for p in self.problems]
        super().__init__("\n".join(self.errors))
