"""Subcommands of the ``genesis`` CLI, one module each (see ``genesis.cli``)."""
