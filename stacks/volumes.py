"""Short volume syntax `[source:]target[:options]` to docker's long form, as
docker/cli's ParseVolume (cli/compose/loader/volume.go): platform-neutral,
Windows drive letters kept whole, unknown options ignored."""
from __future__ import annotations

_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


def _is_drive(buffer: str, char: str) -> bool:
    return char == ":" and len(buffer) == 1 and buffer.isalpha()


def parse_volume(spec: str) -> dict:
    """{type, source?, target, read_only?, bind?, volume?}; ValueError as docker."""
    if not spec:
        raise ValueError("invalid empty volume spec")
    if len(spec) <= 2:
        return {"type": "volume", "target": spec}
    volume: dict = {}
    buffer = ""
    for char in spec + "\0":
        if _is_drive(buffer, char):
            buffer += char
        elif char in (":", "\0"):
            try:
                _fill(volume, buffer, end=char == "\0")
            except ValueError as exc:
                raise ValueError(f"invalid spec: {spec}: {exc}") from None
            buffer = ""
        else:
            buffer += char
    volume["type"] = _volume_type(volume.get("source", ""))
    return {"type": volume.pop("type"), **volume}


def _fill(volume: dict, buffer: str, end: bool) -> None:
    if not buffer:
        raise ValueError("empty section between colons")
    if "source" not in volume and end:  # one part only: an anonymous volume
        volume["target"] = buffer
    elif "source" not in volume:
        volume["source"] = buffer
    elif "target" not in volume:
        volume["target"] = buffer
    elif not end:
        raise ValueError("too many colons")
    else:
        _options(volume, buffer)


def _options(volume: dict, text: str) -> None:
    for option in text.split(","):
        if option in ("ro", "rw"):
            volume["read_only"] = option == "ro"
        elif option == "nocopy":
            volume["volume"] = {"nocopy": True}
        elif option in _PROPAGATIONS:
            volume["bind"] = {"propagation": option}
        # anything else (z, Z, consistency words...) is ignored, as docker does


def _volume_type(source: str) -> str:
    if not source:
        return "volume"
    if source[0] in "./~":
        return "bind"
    if len(source) == 1:
        return "volume"
    if source.startswith("\\\\"):  # Windows named pipe
        return "bind"
    return "bind" if _is_drive(source[0], source[1]) else "volume"
