"""What every rung's check shares, part one (tests/exercises.py) and part two alike: how a
check says that a rung is not solved. Standard library only."""

from typing import Optional


class Failed(Exception):
    """A rung not solved: what happened, and what should have. `section` names the guide's
    section whose rule was broken, when that is not the rung being checked (a rung-3 mistake
    can show while rung 2 is checked)."""

    def __init__(self, happened: str, should: str, section: Optional[str] = None) -> None:
        super().__init__(happened)
        self.happened, self.should, self.section = happened, should, section
