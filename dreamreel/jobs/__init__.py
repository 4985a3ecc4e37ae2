"""Wiring one job: validate -> plan -> run directory -> models -> loop -> finish.

``render`` (a settings file or validated settings into a run directory, and ``--resume``),
``checks`` (every model and input found before anything loads), ``resume`` (the options given with
``--resume`` against the run's own), ``still`` (A1111 stills as one-frame runs) and ``m2m`` (Video
Input settings from the ``dreamreel m2m`` command line). The CLI and the Python API both come here.
"""
