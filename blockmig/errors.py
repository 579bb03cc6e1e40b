class Refused(Exception):
    """A request or action blockmig will not carry out. `message` says what to fix;
    `field` names the form field it belongs to, when there is one. Nothing was changed."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
