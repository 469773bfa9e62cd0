"""One context-manager protocol for the objects that hold a file, a socket or a connection."""

from __future__ import annotations

from typing import Self

__all__ = ["Closing"]


class Closing:
    """``with Thing(...) as thing:`` closes it on the way out, error or not."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
