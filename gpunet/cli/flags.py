"""Long flags generated from a command's config dataclass: the field-type mapping lives here once."""
from __future__ import annotations

TYPES = {"int": int, "float": float, "str": str, int: int, float: float, str: str}


def add_field_flag(parser, name: str, field_type, default, help_text: str, choices=None) -> None:
    """--name-with-dashes for a dataclass field; bools become store_true switches.
    `choices` (a tuple of strings) are listed in the help and checked by argparse."""
    flag = "--" + name.replace("_", "-")
    if field_type in ("bool", bool):
        parser.add_argument(flag, action="store_true", default=default, help=help_text)
    else:
        if choices:
            help_text = f"{help_text}; one of: {', '.join(choices)}"
        parser.add_argument(flag, type=TYPES.get(field_type, str), default=default, metavar=name.upper(),
                            choices=choices, help=help_text)
