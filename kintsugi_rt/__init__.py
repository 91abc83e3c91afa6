"""Kintsugi RT: the real-time backend of Kintsugi AI."""

__version__ = "0.1.0"
