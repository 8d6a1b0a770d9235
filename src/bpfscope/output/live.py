"""A rich table that refreshes in place (rich.live.Live), drawn only on a terminal. rich is imported
here, not at start-up, so JSON runs and scripts never pay for it."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Optional, Sequence


class LiveTable:
    """`with LiveTable(title, columns) as live: live.update(rows)` redraws the same screen area."""

    def __init__(self, title: str, columns: Sequence[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self._title = title
        self._columns = list(columns)
        self.console = Console()
        self._live = Live(self._table([]), console=self.console, auto_refresh=False, transient=False)

    def _table(self, rows: Sequence[Sequence[Any]]) -> Any:
        from rich.table import Table

        table = Table(title=self._title, title_justify="left")
        for i, column in enumerate(self._columns):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        return table

    def update(self, rows: Sequence[Sequence[Any]], title: Optional[str] = None) -> None:
        if title:
            self._title = title
        self._live.update(self._table(rows), refresh=True)

    def __enter__(self) -> LiveTable:
        self._live.start()
        return self

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self._live.stop()
