"""The application around the library: the ``tinygrad-bn`` command (``cli``), the demo it
runs first (``demo``) and the plots it writes (``plots``)."""
