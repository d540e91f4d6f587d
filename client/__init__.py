"""comity client: an async library and the ``comity`` command line over it."""
