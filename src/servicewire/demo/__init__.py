"""The bundled example site behind ``servicewire demo``.

:mod:`~servicewire.demo.run` is the desktop side: it starts the site in a
subprocess (:mod:`~servicewire.demo.serve`) and calls it through
:class:`servicewire.Client`. This package imports nothing, so that the demo's
client process never loads Django; only the subprocess does.
"""
