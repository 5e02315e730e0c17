"""The benchmark of servicewire against its peers: ``make bench`` or ``python -m bench``.

See ``bench/README.md`` for what is measured and how.
"""
