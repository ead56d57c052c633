"""What every application operation is given: the recorder of what it committed, the rows it owns."""

from __future__ import annotations

from typing import Any, Protocol

Owned = dict[str, list[str]]
"""Row ids a writer thread may touch, by table, plus 'created' and 'ordered' product ids."""


class Recorder(Protocol):
    """Remembers the last value committed to each row, so a check can find every write afterwards."""

    def expect(self, table: str, row_id: str, **values: Any) -> None: ...

    def forget(self, table: str, row_id: str) -> None: ...
