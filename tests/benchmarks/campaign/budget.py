"""Wall-clock shares of the campaign's time budget."""
import time


class Budget:
    """A deadline: ``left()`` seconds remain, ``spent()`` once it has passed."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def spent(self) -> bool:
        return self.left() <= 0


def error_text(exc: BaseException) -> str:
    """One line naming an exception, for a result file."""
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"
