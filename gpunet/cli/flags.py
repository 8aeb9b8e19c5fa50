"""Long flags generated from a command's config dataclass: the field-type mapping lives here once."""
from __future__ import annotations

TYPES = {"int": int, "float": float, "str": str, int: int, float: float, str: str}


def add_field_flag(parser, name: str, field_type, default, help_text: str) -> None:
    """--name-with-dashes for a dataclass field; bools become store_true switches."""
    flag = "--" + name.replace("_", "-")
    if field_type in ("bool", bool):
        parser.add_argument(flag, action="store_true", default=default, help=help_text)
    else:
        parser.add_argument(flag, type=TYPES.get(field_type, str), default=default, metavar=name.upper(),
                            help=help_text)
