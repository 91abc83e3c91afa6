"""Checks on registration input, collected per field so a client can show every problem at once."""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from kintsugi_rt.auth.messages import RegisterRequest

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
DISPLAY_NAME_MAX_LENGTH = 64
EMAIL_MAX_LENGTH = 254

# The most used passwords of public breach lists; anything here is refused outright.
_COMMON_PASSWORDS = frozenset(
    {
        "12345678",
        "123456789",
        "1234567890",
        "password",
        "password1",
        "password123",
        "qwertyuiop",
        "qwerty123",
        "11111111",
        "iloveyou",
        "00000000",
        "abcdefgh",
        "abc12345",
        "letmein1",
        "welcome1",
        "sunshine",
        "princess",
        "football",
        "baseball",
        "superman",
        "1q2w3e4r",
        "87654321",
        "passw0rd",
        "trustno1",
        "qwerty12",
    }
)


def normalize_email(raw: str) -> str | None:
    """The one form of an address we store, look up and rate-limit by; ``None`` if it is not valid.

    email-validator's normalised address (NFC local part, IDNA-normalised domain), lower-cased, so the
    NFC and NFD spellings of ``josé@…`` or ``JOSÉ@…`` are one account. NFC once more after
    lower-casing, as a case mapping is not promised to keep a string in NFC.
    """
    stripped = raw.strip()
    if len(stripped) > EMAIL_MAX_LENGTH:
        return None
    try:
        normalized = validate_email(stripped, check_deliverability=False).normalized
    except EmailNotValidError:
        return None
    return unicodedata.normalize("NFC", normalized.lower())


def loose_email(raw: str) -> str:
    """A best-effort normal form of input that is not a valid address (for rate-limit keys)."""
    return unicodedata.normalize("NFC", raw.strip().lower())


def check_email(raw: str) -> tuple[str, str | None]:
    """Return the normalised email (best effort when invalid) and an error message, if any."""
    if len(raw.strip()) > EMAIL_MAX_LENGTH:
        return loose_email(raw), f"Must be at most {EMAIL_MAX_LENGTH} characters."
    email = normalize_email(raw)
    if email is None:
        return loose_email(raw), "Must be a valid email address."
    return email, None


def check_password(password: str, email: str) -> str | None:
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"Must be at least {PASSWORD_MIN_LENGTH} characters."
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"Must be at most {PASSWORD_MAX_LENGTH} characters."
    if not password.strip():
        return "Must not be only spaces."
    if password.lower() in _COMMON_PASSWORDS or len(set(password)) < 4:
        return "Is too easy to guess."
    local_part = email.split("@", 1)[0]
    if len(local_part) >= 4 and local_part in password.lower():
        return "Must not contain your email address."
    return None


def check_display_name(raw: str) -> tuple[str, str | None]:
    name = " ".join(raw.split())
    if not name:
        return name, "Must not be empty."
    if len(name) > DISPLAY_NAME_MAX_LENGTH:
        return name, f"Must be at most {DISPLAY_NAME_MAX_LENGTH} characters."
    if any(unicodedata.category(ch) in {"Cc", "Cf"} for ch in name):
        return name, "Must not contain control characters."
    return name, None


def check_registration(body: RegisterRequest) -> tuple[str, str, dict[str, str]]:
    """Return ``(email, display_name, field errors)``."""
    problems: dict[str, str] = {}
    email, email_error = check_email(body.email)
    if email_error:
        problems["email"] = email_error
    password_error = check_password(body.password, email)
    if password_error:
        problems["password"] = password_error
    display_name, name_error = check_display_name(body.display_name)
    if name_error:
        problems["display_name"] = name_error
    return email, display_name, problems
