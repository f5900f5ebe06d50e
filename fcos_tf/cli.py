"""The one pattern of every command (``fcos-train``, ``fcos-export``, ``fcos-predict``, ...).

Each command is a module of this package with ``main(argv=None) -> int``, run by its console
script and by ``python -m fcos_tf.<module>``. It parses its flags with :func:`parse_flags`
(absl flags on a ``FlagValues`` of its own, so that importing a command registers nothing
and ``main([...])`` can be called from Python), and it fails the same way as the others:

=======  =====================================================================================
status   meaning
=======  =====================================================================================
0        done
1        one line on stderr: a bad flag or config key, bad data, missing input, a model that
         does not fit its checkpoint, a non-finite loss. ``--debug`` (every command has it)
         or ``FCOS_DEBUG=1`` prints the traceback before that line.
128 + N  stopped by signal N after saving what can be resumed (``fcos-train``: 143 for
         SIGTERM, 130 for Ctrl-C); an export leaves no half-written folder.
=======  =====================================================================================

Recipes (``--config``) are given by name (``--config=fcos_r50_1x_improved``, one of
``fcos_tf/configs/``) or as the path of a recipe file; ``--config.<section>.<key>=value``
overrides a key, and an unknown key is an error with a "did you mean".

TensorFlow loads (quietly, :func:`import_tensorflow`) when the flags have been parsed, so
``--help``, a bad flag and a misspelt config key answer in a fraction of a second. A command
module therefore imports only the standard library and this module at its top, and the rest
inside its functions; a command whose flags name values defined next to TensorFlow code
calls :func:`import_tensorflow` before it imports them.
"""

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

# Before TensorFlow is first imported (every command imports this module first, and
# TensorFlow only after its flags are parsed): its C++ INFO lines are not the command's
# output. Set the variable to 0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import flags  # noqa: E402

# What TensorFlow's native libraries print to stderr when they load, before any log level
# applies (TF_CPP_MIN_LOG_LEVEL does not reach these lines): the oneDNN notice, once per
# library, and absl's note that logging is not initialised yet.
_IMPORT_NOISE = (
    "oneDNN custom operations are on",
    "All log messages before absl::InitializeLog() is called",
)

__all__ = [
    "COCO_READER_TERMS",
    "DEBUG_ENV",
    "debug_requested",
    "define_model_flags",
    "fail",
    "import_tensorflow",
    "in_command_terms",
    "parse_flags",
    "progress_verbosity",
    "set_up_logging",
]

DEBUG_ENV = "FCOS_DEBUG"
DEBUG_FLAG_HELP = (
    f"Show the full traceback of the one-line errors (also: {DEBUG_ENV}=1 in the environment)."
)
_TRUE = ("1", "true", "yes", "on")
# The flag naming a recipe; --config.<section>.<key> overrides its keys.
CONFIG_FLAG = "config"


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


# The library's errors name its arguments (`workdir`='/runs/x'); a command's user knows its
# flags. parse_flags records the running command's: argument name -> the words for it
# ("--workdir", or "" where the value alone says it: a positional file).
_command_terms: dict[str, str] = {}
# The COCO reader's arguments (fcos_tf.data.coco.read_coco) as the commands that read COCO
# files name them (fcos-convert-dataset, fcos-draw-targets).
COCO_READER_TERMS = {"annotation_file": "--annotations", "image_dir": "--images"}


def in_command_terms(message: str) -> str:
    """``message`` with the library's argument names replaced by the command's flags.

    A name in backquotes that is one of the running command's terms (its flags, and the
    aliases it gave :func:`parse_flags`) becomes the flag: the ``workdir`` of "`workdir`='/x'
    does not exist" reads "--workdir='/x' does not exist"; an alias of ``""`` leaves the
    value alone ("'/x.pth' does not exist"). Other names are left as they are.
    """

    def replace(match):
        name, value = match.group(1), match.group(2)
        if name not in _command_terms:
            return match.group(0)
        term = _command_terms[name]
        if value is None:
            return term or match.group(0)
        return f"{term}={value}" if term else value

    return re.sub(r"`(\w+)`(?:=('[^']*'|\S+))?", replace, message)


def fail(message: str, error: BaseException | None = None) -> NoReturn:
    """Exits with status 1 and ``message`` as the last line of stderr.

    The library's argument names in ``message`` are given as the command's flags
    (:func:`in_command_terms`).

    Args:
        message: one line saying what is wrong and, where possible, what to do.
        error: the exception behind it; its traceback is printed first when
            :func:`debug_requested`.
    """
    message = in_command_terms(message)
    if error is not None and debug_requested():
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    # The message is the last line: TensorFlow's warnings while the process winds down (one
    # per checkpoint value a failed restore left unmatched, when its objects are deleted)
    # are not the command's output.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    sys.exit(message)


def import_tensorflow() -> None:
    """Imports TensorFlow with its load-time notices left out of the command's stderr.

    Everything else TensorFlow prints while it loads (a missing library, an instruction-set
    warning) is passed on; with ``TF_CPP_MIN_LOG_LEVEL=0`` nothing is left out.
    """
    if "tensorflow" in sys.modules:
        return
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        import tensorflow  # noqa: F401

        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in _IMPORT_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()


_HELP = ("--help", "-help", "-h", "--helpfull", "--helpshort", "-?")


def _is_required(flag) -> bool:
    """Whether ``flags.mark_flag_as_required`` was called on ``flag`` (absl gives it a
    validator refusing None, with this message)."""
    return any(
        str(getattr(validator, "message", "")).endswith("must have a value other than None.")
        for validator in flag.validators
    )


def _print_help(flag_values, program: str, positional: str | None) -> NoReturn:
    """Usage and the command's flags on stdout (each required one marked so, ``--debug``
    last); exit status 0."""
    from fcos_tf import __version__

    usage = f"usage: {program} [flags]"
    if positional:
        usage += f" {positional} [{positional} ...]"
    blocks = []  # (flag name, its help lines)
    for module in flag_values.flags_by_module_dict():
        if module.startswith("absl."):
            continue
        # absl's text: a line naming the module (a file path for a script), then per flag a
        # line "  --name: help" and its continuation lines.
        for line in flag_values.module_help(module).strip("\n").split("\n")[1:]:
            match = re.match(r"  --(?:\[no\])?(\w+):", line)
            if match:
                blocks.append((match.group(1), [line]))
            elif blocks:
                blocks[-1][1].append(line)
    blocks.sort(key=lambda block: block[0] == "debug")
    text = [
        usage,
        f"fcos_tf {__version__}; exit status 0 when done, 1 on bad input (one line; --debug).",
        "flags:",
    ]
    for name, lines in blocks:
        if name == CONFIG_FLAG:
            # Its help names the default recipe; absl would add the file's full path.
            lines = [line for line in lines if not line.startswith("    (default: ")]
        text += lines + (["    (required)"] if _is_required(flag_values[name]) else [])
    try:
        print("\n".join(text), flush=True)
    except BrokenPipeError:  # e.g. `fcos-train --help | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)


def _argv_value(arguments: Sequence[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` (None when absent)."""
    for index, arg in enumerate(arguments):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and index + 1 < len(arguments):
            return arguments[index + 1]
    return None


def _resolve_recipe(arguments: list[str]) -> list[str]:
    """``--config=NAME`` (a recipe of ``fcos_tf/configs/``) becomes that recipe's file path."""
    from fcos_tf.core.config import recipe_path

    resolved = []
    for index, arg in enumerate(arguments):
        if arg.startswith(f"--{CONFIG_FLAG}="):
            arg = f"--{CONFIG_FLAG}={recipe_path(arg.split('=', 1)[1])}"
        elif index and arguments[index - 1] == f"--{CONFIG_FLAG}":
            arg = recipe_path(arg)
        resolved.append(arg)
    return resolved


def _one_line(message) -> str:
    """``message`` on one line: its lines joined, e.g. a "Did you mean" after the error."""
    text = ""
    for line in (line.strip() for line in str(message).splitlines()):
        if line:
            text += ("" if not text else " " if text[-1] in ".?!:;," else ". ") + line
    return text


def _innermost_message(error: BaseException) -> str:
    """The innermost message of a (chained) config error, without quoting."""
    while error.args and isinstance(error.args[0], Exception):
        error = error.args[0]
    return str(error.args[0]) if error.args else str(error)


def _config_override_message(arguments: Sequence[str], error: BaseException) -> str:
    """One line for a refused ``--config.<key>`` override.

    For an unknown key: the override, the section that lacks it and, without a "did you
    mean", the keys that section has (from the base config, which every recipe shares).
    """
    message = _one_line(_innermost_message(error))
    unknown = re.fullmatch(r"'(\w+)'(.*)", message, re.DOTALL)
    if unknown is None:
        return f"Invalid --config override: {message}"
    key, rest = unknown.groups()
    for arg in arguments:
        if not arg.startswith(f"--{CONFIG_FLAG}."):
            continue
        path = arg[len(CONFIG_FLAG) + 3 :].split("=", 1)[0].split(".")
        if key not in path:
            continue
        section = path[: path.index(key)]
        where = "config." + ".".join(section) if section else "the config"
        text = f"Invalid --config override --config.{'.'.join(path)}: {where} has no key {key!r}"
        if rest:  # ". Did you mean ..."
            return text + rest
        from fcos_tf.core.config import base_config

        keys = base_config()
        for name in section:
            keys = keys.get(name) if hasattr(keys, "get") else None
        if hasattr(keys, "keys"):
            return f"{text}; it has {', '.join(sorted(keys.keys()))}."
        return text + "."
    return f"Invalid --config override: {message}"


def _define_config_flag(flag_values, program, arguments, recipe_default, workdir_default):
    from ml_collections import config_flags

    # The --config.<key> override flags are defined from the arguments, at definition time.
    sys_argv = [program, *arguments]
    given = _argv_value(arguments, CONFIG_FLAG)
    workdir = _argv_value(arguments, "workdir")
    if given is None and workdir_default and workdir:
        # The recipe a run wrote: overrides apply to it.
        import_tensorflow()
        from fcos_tf.core import rundir

        config_flags.DEFINE_config_dict(
            CONFIG_FLAG,
            rundir.read_config(workdir),
            "The workdir's config.json.",
            flag_values=flag_values,
            lock_config=True,
            sys_argv=sys_argv,
        )
        return
    default = None
    if given is None and recipe_default:
        from fcos_tf.core.config import recipe_path

        default = recipe_path(recipe_default)
    config_flags.DEFINE_config_file(
        CONFIG_FLAG,
        default=default,
        help_string=(
            "Recipe: a name of fcos_tf/configs/ (fcos_r50_1x_improved, ...) or a recipe file"
            + (f"; default: {recipe_default}." if recipe_default else "")
            + ("; default with --workdir: its config.json." if workdir_default else "")
        ),
        flag_values=flag_values,
        lock_config=True,
        sys_argv=sys_argv,
    )


def parse_flags(
    define: Callable[[flags.FlagValues], None],
    argv: Sequence[str] | None,
    program: str,
    *,
    positional: str | None = None,
    recipe_default: str | None = None,
    workdir_config: bool = False,
    terms: dict[str, str] | None = None,
) -> tuple[flags.FlagValues, list[str]]:
    """Parses a command's flags, the same way for every command.

    The flags are defined on a fresh ``flags.FlagValues`` (never the process-wide
    ``flags.FLAGS``); ``--debug`` is defined for every command. TensorFlow is imported
    (:func:`import_tensorflow`) once they are parsed, or earlier where the config is the
    ``config.json`` of a ``--workdir``.

    Args:
        define: ``define(flag_values)`` defines the command's own flags
            (``flags.DEFINE_*(..., flag_values=flag_values)``).
        argv: the arguments without the program name (default ``sys.argv[1:]``).
        program: the program name shown in errors.
        positional: what the positional arguments are (e.g. ``"IMAGE"``); None when the
            command takes none, and then a positional argument is an error.
        recipe_default: with a ``--config`` recipe flag: the recipe used when none is given.
        workdir_config: with a ``--config`` flag whose default is ``<--workdir>/config.json``
            (the commands that read a trained run).
        terms: library argument names that the command's errors should say otherwise
            (:func:`in_command_terms`): ``{"annotation_file": "--annotations"}``, or ``""``
            for a value that is the command's positional argument. Every flag of the
            command is a term of its own.

    Returns:
        ``(flag_values, positional_arguments)``. A bad flag, an unknown config key or an
        unexpected argument ends the process with one line (status 1).
    """
    arguments: list[str] = list(sys.argv[1:] if argv is None else argv)
    flag_values = flags.FlagValues()
    flags.DEFINE_bool("debug", False, DEBUG_FLAG_HELP, flag_values=flag_values)
    _command_terms.clear()
    if workdir_config:  # read (for its config.json) before the command's flags exist
        _command_terms["workdir"] = "--workdir"
    _command_terms.update(terms or {})
    try:
        if recipe_default or workdir_config:
            arguments = _resolve_recipe(arguments)
            _define_config_flag(flag_values, program, arguments, recipe_default, workdir_config)
        define(flag_values)
        for name in flag_values:
            _command_terms.setdefault(name, f"--{name}")
        if any(arg.split("=", 1)[0] in _HELP for arg in arguments):
            _print_help(flag_values, program, positional)
        rest = flag_values([program, *arguments])[1:]
    except flags.Error as error:
        fail(f"FATAL Flags parsing error: {_one_line(error)} (--help lists the flags).", error)
    except FileNotFoundError as error:  # a recipe or a workdir that does not exist
        fail(str(error), error)
    except (KeyError, AttributeError, TypeError, ValueError) as error:
        # An unknown --config.<key> is refused by lock_config (with a "did you mean").
        fail(_config_override_message(arguments, error), error)
    if rest and positional is None:
        fail(f"{program}: unexpected argument(s) {rest}; it takes flags only (--help).")
    # Only now: --help, a bad flag and an unknown config key answer without loading it.
    import_tensorflow()
    return flag_values, rest


def set_up_logging() -> None:
    """The command's own INFO lines on stderr; TensorFlow's Python logging from WARNING up."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(levelname).1s%(asctime)s %(filename)s:%(lineno)d] %(message)s",
        datefmt="%m%d %H:%M:%S",
        force=True,
    )
    # TensorFlow logs through both loggers, e.g. every checkpoint shard at INFO
    # ("Sharding callback duration").
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)


def define_model_flags(flag_values) -> None:
    """The flags naming a trained model, shared by the commands that read one: ``--workdir``
    and ``--checkpoint`` (``--config`` comes from ``parse_flags(workdir_config=True)``)."""
    flags.DEFINE_string(
        "workdir",
        None,
        "fcos-train run directory (config, label map, checkpoints).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "checkpoint",
        None,
        "Checkpoint prefix or folder; default: the newest of --workdir.",
        flag_values=flag_values,
    )


def progress_verbosity(stream=None) -> int:
    """Keras ``verbose`` for ``fit``: a live bar (1) on a terminal, one line per epoch (2)
    when the output goes to a file or a pipe, where a bar is a stream of control characters.
    """
    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return 2
