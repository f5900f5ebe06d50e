"""How the commands (train.py, export_savedmodel.py, ``python -m fcos_tf.predict``) fail.

An expected failure (bad config, bad data, missing input, a non-finite loss, ...) ends the
command with one line on stderr and exit status 1, no traceback. ``--debug`` on the command
line, or the environment variable ``FCOS_DEBUG=1``, prints the full traceback before that
line. The scripts define the ``--debug`` flag themselves (library modules define no flags);
this module only reads it.
"""

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import flags

DEBUG_ENV = "FCOS_DEBUG"
DEBUG_FLAG_HELP = (
    f"Show the full traceback of the one-line errors (also: {DEBUG_ENV}=1 in the environment)."
)
_TRUE = ("1", "true", "yes", "on")


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """Whether tracebacks are wanted: ``FCOS_DEBUG=1`` or ``--debug`` among ``argv``.

    Reads the raw arguments (default ``sys.argv``), so that it also answers before or
    without flag parsing (an error while parsing the flags themselves).
    """
    if os.environ.get(DEBUG_ENV, "").strip().lower() in _TRUE:
        return True
    argv = sys.argv if argv is None else argv
    for arg in argv[1:]:
        if arg in ("--debug", "-debug"):
            return True
        if arg.startswith(("--debug=", "-debug=")):
            return arg.split("=", 1)[1].strip().lower() in _TRUE
    return False


def fail(message: str, error: BaseException | None = None) -> NoReturn:
    """Exits with status 1 and ``message`` as the last line of stderr.

    Args:
        message: one line saying what is wrong and, where possible, what to do.
        error: the exception behind it; its traceback is printed first when
            :func:`debug_requested`.
    """
    if error is not None and debug_requested():
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    sys.exit(message)


def parse_flags(
    define: Callable[[flags.FlagValues], None], argv: Sequence[str] | None, program: str
) -> flags.FlagValues:
    """absl flags of a small command, on a ``FlagValues`` of its own.

    The flags are defined on a fresh ``flags.FlagValues`` (never the process-wide
    ``flags.FLAGS``), so a library module whose ``main`` uses this registers nothing when
    imported, and ``main([...])`` can be called from Python.

    Args:
        define: ``define(flag_values)`` defines the flags (``flags.DEFINE_*(...,
            flag_values=flag_values)``).
        argv: the arguments without the program name (default ``sys.argv[1:]``).
        program: the program name shown in errors.

    Returns:
        The parsed ``FlagValues``; a bad flag ends the process with one line (status 1).
    """
    flag_values = flags.FlagValues()
    define(flag_values)
    arguments: list[str] = list(sys.argv[1:] if argv is None else argv)
    try:
        flag_values([program, *arguments])
    except flags.Error as error:
        fail(f"FATAL Flags parsing error: {error}\nPass --helpfull to see help on flags.", error)
    return flag_values


def progress_verbosity(stream=None) -> int:
    """Keras ``verbose`` for ``fit``: a live bar (1) on a terminal, one line per epoch (2)
    when the output goes to a file or a pipe, where a bar is a stream of control characters.
    """
    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return 2
