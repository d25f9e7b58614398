"""click parameter types shared by the root CLIs (train.py, calc_metrics.py)."""

import click


class CommaSeparatedList(click.ParamType):
    """``a,b,c`` -> ``["a", "b", "c"]``; empty or ``none`` -> ``[]``."""

    name = "list"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        if value is None or value.strip().lower() in ("", "none"):
            return []
        return [v.strip() for v in value.split(",") if v.strip()]
