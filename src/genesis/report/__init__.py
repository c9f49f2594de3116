"""Paper outputs: tables with significance, figures and the transformation gallery.

Reports read only the files they are given (the rule's declared inputs: summary CSVs,
metrics, predictions), never a folder listing and never the training code, so a table
can be regenerated from a finished run on any machine and a stale run folder is never
read. The one
exception is the gallery, which draws the transformations themselves and therefore imports
``genesis.transforms``.
"""
