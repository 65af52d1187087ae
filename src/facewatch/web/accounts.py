"""Users and their credentials (placeholder: the accounts feature replaces this module)."""

from __future__ import annotations

from facewatch.config import AuthSettings
from facewatch.watchlist.store import Store


class Accounts:
    def __init__(self, store: Store, settings: AuthSettings) -> None:
        self.store = store
        self.settings = settings
