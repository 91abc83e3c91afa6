"""CHAT: AI chat on the socket — streaming answers, stop, branching history, search, token ledger."""

from __future__ import annotations

from kintsugi_rt.chat import examples as ex
from kintsugi_rt.chat import frames as f
from kintsugi_rt.chat.service import ERROR_CODES, ChatService
from kintsugi_rt.socket.registry import SocketFeatures, SocketHandler

__all__ = ["ChatService", "socket_features"]


def socket_features(chat: ChatService) -> SocketFeatures:
    """The chat's frames, bound to ``chat``."""
    return SocketFeatures(
        handlers=(
            SocketHandler(f.ChatCreate, chat.create, ex.CREATE),
            SocketHandler(f.ChatList, chat.list_chats, ex.LIST),
            SocketHandler(f.ChatGet, chat.get, ex.GET),
            SocketHandler(f.ChatSwitch, chat.switch, ex.SWITCH),
            SocketHandler(f.ChatSend, chat.send, ex.SEND, ex.SEND_RESULT),
            SocketHandler(f.ChatStop, chat.stop_answer, ex.STOP),
            SocketHandler(f.ChatRegenerate, chat.regenerate, ex.REGENERATE, ex.REGENERATE_RESULT),
            SocketHandler(f.ChatEdit, chat.edit, ex.EDIT),
            SocketHandler(f.ChatRename, chat.rename, ex.RENAME),
            SocketHandler(f.ChatDelete, chat.delete, ex.DELETE),
            SocketHandler(f.ChatSearch, chat.search, ex.SEARCH, ex.SEARCH_RESULT),
            SocketHandler(f.ChatModels, chat.models, ex.MODELS, ex.MODELS_RESULT),
        ),
        events=ex.EVENTS,
        on_connect=(chat.on_connect,),
        error_codes=ERROR_CODES,
    )
