"""Go's fmt.Sprint for YAML scalars: docker turns numbers and booleans in
environment, labels and the like into strings this way ("true", "2.5", "1e+06")."""
from __future__ import annotations

from decimal import Decimal


def go_sprint(value: object) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _go_float(value: float) -> str:
    # %v is strconv's 'g' with the shortest digits; with shortest precision Go
    # switches to the exponent form when the decimal exponent is < -4 or >= 6.
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    sign, digits, exp = Decimal(repr(value)).normalize().as_tuple()
    text = "".join(map(str, digits))
    point = len(text) + exp  # position of the decimal point
    if point - 1 < -4 or point - 1 >= 6:
        mant = text[0] + ("." + text[1:] if len(text) > 1 else "")
        e = point - 1
        body = f"{mant}e{'+' if e >= 0 else '-'}{abs(e):02d}"
    elif point <= 0:
        body = "0." + "0" * -point + text
    elif point >= len(text):
        body = text + "0" * (point - len(text))
    else:
        body = text[:point] + "." + text[point:]
    return ("-" if sign else "") + body
