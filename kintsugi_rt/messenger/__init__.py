"""MESSENGER: direct and group conversations on the socket."""

from __future__ import annotations

from kintsugi_rt.messenger import examples as ex
from kintsugi_rt.messenger import frames as f
from kintsugi_rt.messenger.frames import Message
from kintsugi_rt.messenger.service import ERROR_CODES, MessengerService
from kintsugi_rt.socket.registry import SocketFeatures, SocketHandler

__all__ = ["Message", "MessengerService", "socket_features"]


def socket_features(messenger: MessengerService) -> SocketFeatures:
    """The messenger's frames, bound to ``messenger``."""
    return SocketFeatures(
        handlers=(
            SocketHandler(f.ConversationCreate, messenger.create, ex.CREATE),
            SocketHandler(f.ConversationList, messenger.list_conversations, ex.LIST),
            SocketHandler(f.ConversationGet, messenger.get, ex.GET),
            SocketHandler(f.ConversationAddMembers, messenger.add_members, ex.ADD_MEMBERS),
            SocketHandler(f.ConversationRemoveMember, messenger.remove_member, ex.REMOVE_MEMBER),
            SocketHandler(f.ConversationLeave, messenger.leave, ex.LEAVE),
            SocketHandler(f.ConversationPromote, messenger.promote, ex.PROMOTE),
            SocketHandler(f.ConversationSync, messenger.sync, ex.SYNC),
            SocketHandler(f.MessageSend, messenger.send, ex.SEND),
            SocketHandler(f.MessageEdit, messenger.edit, ex.EDIT),
            SocketHandler(f.MessageDelete, messenger.delete, ex.DELETE),
            SocketHandler(f.MessageReact, messenger.react, ex.REACT),
            SocketHandler(f.MessagePin, messenger.pin, ex.PIN),
            SocketHandler(f.MessageForward, messenger.forward, ex.FORWARD),
            SocketHandler(f.MessageHistory, messenger.history, ex.HISTORY),
            SocketHandler(f.MessageSearch, messenger.search, ex.SEARCH),
            SocketHandler(f.MessageRead, messenger.read, ex.READ),
            SocketHandler(f.Typing, messenger.typing, ex.TYPING),
            SocketHandler(f.ReceiptsSet, messenger.receipts, ex.RECEIPTS),
        ),
        events=ex.EVENTS,
        error_codes=ERROR_CODES,
    )
