#!/usr/bin/env python3
"""Charm entry point for {{name}}; all behaviour comes from paas-charm."""

import typing

import ops
import paas_charm.django


class AppCharm(paas_charm.django.Charm):
    """The {{name}} charm."""

    def __init__(self, *args: typing.Any) -> None:
        super().__init__(*args)


if __name__ == "__main__":
    ops.main(AppCharm)
