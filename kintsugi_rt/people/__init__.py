"""PEOPLE: finding someone to message (exact lookup by email or @handle, search among your contacts)
and profiles (display name, @handle, avatar)."""

from __future__ import annotations

from kintsugi_rt.people import examples as ex
from kintsugi_rt.people import frames as f
from kintsugi_rt.people.service import ERROR_CODES, PeopleService
from kintsugi_rt.socket.registry import SocketFeatures, SocketHandler

__all__ = ["PeopleService", "socket_features"]


def socket_features(people: PeopleService) -> SocketFeatures:
    """The people frames, bound to ``people``."""
    return SocketFeatures(
        handlers=(
            SocketHandler(f.UserLookup, people.lookup, ex.LOOKUP, ex.LOOKUP_RESULT),
            SocketHandler(f.UserSearch, people.search, ex.SEARCH, ex.SEARCH_RESULT),
            SocketHandler(f.ProfileGet, people.get, ex.GET, ex.GET_RESULT),
            SocketHandler(f.ProfileUpdate, people.update, ex.UPDATE, ex.UPDATE_RESULT),
        ),
        events=ex.EVENTS,
        error_codes=ERROR_CODES,
    )
