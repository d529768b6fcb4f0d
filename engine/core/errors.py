"""User-facing errors: one message that names the problem and the fix."""


class FtwError(Exception):
    """A problem the user can fix (bad input, bad setting). CLI exit code 2."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.problem}\n  fix: {self.fix}" if self.fix else self.problem
