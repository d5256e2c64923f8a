"""The one error a compose file can raise, and where in which file it points."""
from __future__ import annotations

from dataclasses import dataclass, field

Path = tuple  # keys (str) and list indexes (int), from the document root


def format_path(path: Path) -> str:
    """services.web.ports[0].target: the form users read in our messages."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class StackFileError(ValueError):
    """A compose file problem: the message names the file, the line when known,
    the key path and what is allowed (or the fix)."""

    def __init__(self, message: str, file: str = "", line: int | None = None,
                 path: Path = ()) -> None:
        self.file, self.line, self.path, self.detail = file, line, tuple(path), message
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


@dataclass
class Where:
    """One file's name and the line of every key and list item in it, so that
    any stage (interpolation, schema, normalisation) can point at the source."""

    file: str
    lines: dict = field(default_factory=dict)  # Path -> 1-based line

    def line(self, path: Path) -> int | None:
        # The nearest enclosing node that has a line: values created by
        # normalisation have none of their own.
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(self, path: Path, message: str, *, with_path: bool = True,
              at: Path | None = None) -> StackFileError:
        """The error for `path`; its line is that of `at` when given (an unknown
        key's own line rather than its parent's)."""
        text = f"{format_path(path)}: {message}" if with_path and path else message
        return StackFileError(text, self.file, self.line(path if at is None else at), path)
