"""Shared click parameter types: comma lists, positive numbers, K=V tags (one-line errors)."""
from __future__ import annotations

import click


class CommaList(click.ParamType):
    name = "LIST"

    def __init__(self, item=str, choices=None, positive=False):
        self.item = item
        self.choices = choices
        self.positive = positive

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        out = []
        for raw in str(value).split(","):
            raw = raw.strip()
            if not raw:
                continue
            try:
                v = self.item(raw)
            except ValueError:
                self.fail(f"'{raw}' is not a valid {self.item.__name__}", param, ctx)
            if self.positive and v <= 0:
                self.fail(f"'{raw}' must be positive", param, ctx)
            if self.choices and v not in self.choices:
                self.fail(f"'{raw}' is not one of: {', '.join(self.choices)}", param, ctx)
            out.append(v)
        if not out:
            self.fail("empty list", param, ctx)
        return out


class Positive(click.ParamType):
    def __init__(self, kind=float, allow_zero=False, maximum=None):
        self.kind = kind
        self.allow_zero = allow_zero
        self.maximum = maximum
        self.name = "INTEGER" if kind is int else "SECONDS"

    def convert(self, value, param, ctx):
        if isinstance(value, self.kind):
            v = value
        else:
            text = str(value).strip()
            try:
                if text.endswith("%") and self.kind is float:
                    v = float(text[:-1]) / 100
                else:
                    v = self.kind(text)
            except ValueError:
                self.fail(f"'{value}' is not a number", param, ctx)
        if v != v or v in (float("inf"), float("-inf")):
            self.fail(f"'{value}' is not a finite number", param, ctx)
        if v < 0 or (v == 0 and not self.allow_zero):
            self.fail(f"'{value}' must be {'non-negative' if self.allow_zero else 'positive'}", param, ctx)
        if self.maximum is not None and v > self.maximum:
            self.fail(f"'{value}' is more than the maximum {self.maximum}", param, ctx)
        return v


class Fraction(Positive):
    """A fraction in (0, maximum]: ``0.01`` or ``1%``."""

    def __init__(self, maximum=1.0):
        super().__init__(float)
        self.limit = maximum
        self.name = "FRACTION"

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if v > self.limit:
            self.fail(f"'{value}' is not a fraction in (0, {self.limit}] (e.g. 0.01 or 1% for 1 %)", param, ctx)
        return v


def parse_kv(values, what="tag") -> dict:
    out = {}
    for item in values or ():
        if "=" not in item or not item.split("=", 1)[0]:
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint=f"--{what}")
        k, v = item.split("=", 1)
        out[k] = v
    return out
