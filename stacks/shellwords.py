"""Split a command string into words the way docker's loader does (google/shlex):
"..." and '...' quotes, backslash escapes (also inside "..."), and `#` starting
a comment only at the start of a word. Python's shlex differs on the last two."""
from __future__ import annotations

_SPACE = " \t\r\n"


def split(text: str) -> list[str]:
    words: list[str] = []
    word: list[str] | None = None   # None: between words
    state = "start"
    chars = iter(text)
    for char in chars:
        if state == "comment":
            state = "start" if char == "\n" else "comment"
        elif state in ("start", "word"):
            state, word = _plain(char, state, word, words, chars)
        elif state == "single":
            if char == "'":
                state = "word"
            else:
                word.append(char)
        else:  # "double"
            state = _double(char, word, chars)
    if state in ("single", "double"):
        raise ValueError("EOF found when expecting closing quote")
    if word is not None:
        words.append("".join(word))
    return words


def _plain(char, state, word, words, chars):
    if char in _SPACE:
        if word is not None:
            words.append("".join(word))
        return "start", None
    if state == "start" and char == "#":
        return "comment", None
    word = [] if word is None else word
    if char == "'":
        return "single", word
    if char == '"':
        return "double", word
    if char == "\\":
        word.append(_escaped(chars))
    else:
        word.append(char)
    return "word", word


def _double(char, word, chars) -> str:
    if char == '"':
        return "word"
    word.append(_escaped(chars) if char == "\\" else char)
    return "double"


def _escaped(chars) -> str:
    try:
        return next(chars)
    except StopIteration:
        raise ValueError("EOF found after escape character") from None
