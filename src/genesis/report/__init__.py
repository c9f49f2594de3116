"""Paper outputs: tables with significance, figures and the transformation gallery.

Reports read only files under ``results/`` (summary CSVs, metrics, predictions), never the
training code, so a table can be regenerated from a finished run on any machine. The one
exception is the gallery, which draws the transformations themselves and therefore imports
``genesis.transforms``.
"""
