from __future__ import annotations


class EngineError(Exception):
    """A problem with the user's input (model, data, params) that no retry will fix.

    `code` is stable and machine-readable (documented in the README); `detail` is for people and
    never contains a server path.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
