"""Where a recipe becomes a run: the default profile and its validation (``config``), the
only place a config becomes objects (``builders``), the files of a run directory
(``rundir``) and a whole train-and-evaluate run (``runner``).
"""
