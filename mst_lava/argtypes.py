"""Argument types shared by every command, and a parser whose errors are one line.

Each function takes the option's text and returns the value, or raises
``argparse.ArgumentTypeError`` with what is expected; argparse then prints
``mst COMMAND: error: argument --T: ...`` (one line, exit status 2).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
from pathlib import Path

# RSM seeds are written into .net files and mixed as 32-bit words; training seeds feed numpy's
# seed (< 2**32, plus the DDP rank). One range that every consumer and the file format can hold.
SEED_MAX = 2 ** 31 - 1


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are a single line (no usage block), exit status 2.

    Subparsers made by ``add_subparsers`` inherit the class."""

    def error(self, message: str):  # noqa: D401 - argparse API
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _int(text: str, what: str) -> int:
    s = str(text).strip()
    if not re.fullmatch(r"[+-]?\d+", s.replace("_", "")):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return int(s)


# Upper bounds of size and count options, checked when the command line is parsed, before anything is
# allocated (a --T of 10**12 grew to 12 GB before; a --threads of 10**12 overflowed in torch). Each is far
# above any sensible use; INT_MAX bounds every other integer option (what C APIs such as torch's take).
INT_MAX = 2 ** 31 - 1
MAX_T = 100_000                 # time steps per sample
MAX_THREADS = 4096              # torch CPU threads
MAX_SEEDS = 10_000              # mask seeds averaged (snn-eval --seeds, rsm-search --seeds/--final-seeds)
MAX_SAMPLES = 10 ** 7           # --n, --offset, --search-n, --limit-train
MAX_BATCH = 10 ** 6             # samples simulated or trained at once
MAX_EPOCHS = 100_000            # training epochs (and --warmup-epochs, --eval-from)
MAX_FRAMES = 10_000             # event frames per sample
MAX_WORKERS = 1024              # data loader processes


def _int_in(text: str, lo: int, hi: int) -> int:
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
    v = _int(text, what)
    if v < lo:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    if v > hi:
        raise argparse.ArgumentTypeError(f"expected {what} up to {hi:_}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """An integer in [1, INT_MAX]."""
    v = _int(text, "a positive integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if v > INT_MAX:
        raise argparse.ArgumentTypeError(f"expected a positive integer up to {INT_MAX:_}, got {text!r}")
    return v


def _bounded(lo: int, hi: int, name: str, doc: str):
    def parse(text: str) -> int:
        return _int_in(text, lo, hi)
    parse.__name__ = parse.__qualname__ = name
    parse.__doc__ = doc
    return parse


def time_steps(text: str) -> int:
    """Time steps T (``--T``) in [1, MAX_T]."""
    v = _int_in(text, 1, INT_MAX)
    if v > MAX_T:
        raise argparse.ArgumentTypeError(f"--T {v} is more than {MAX_T:_} time steps per sample; a run's memory "
                                         "and time grow with T")
    return v


time_chunk = _bounded(1, MAX_T, "time_chunk", f"Time steps folded into one pass, in [1, {MAX_T:_}].")
thread_count = _bounded(1, MAX_THREADS, "thread_count", f"CPU threads in [1, {MAX_THREADS}].")
seed_count = _bounded(1, MAX_SEEDS, "seed_count", f"A number of mask seeds in [1, {MAX_SEEDS:_}].")
sample_count = _bounded(1, MAX_SAMPLES, "sample_count", f"A number of samples in [1, {MAX_SAMPLES:_}].")
sample_count_or_all = _bounded(0, MAX_SAMPLES, "sample_count_or_all",
                               f"A number of samples in [0, {MAX_SAMPLES:_}] (0: all).")
sample_index = _bounded(0, MAX_SAMPLES, "sample_index", f"A sample index in [0, {MAX_SAMPLES:_}].")
batch_size = _bounded(1, MAX_BATCH, "batch_size", f"A batch size in [1, {MAX_BATCH:_}].")
epochs = _bounded(1, MAX_EPOCHS, "epochs", f"A number of epochs in [1, {MAX_EPOCHS:_}].")
epochs_or_none = _bounded(0, MAX_EPOCHS, "epochs_or_none", f"A number of epochs in [0, {MAX_EPOCHS:_}].")
frame_count = _bounded(1, MAX_FRAMES, "frame_count", f"Event frames per sample in [1, {MAX_FRAMES:_}].")
worker_count = _bounded(0, MAX_WORKERS, "worker_count", f"Data loader processes in [0, {MAX_WORKERS}].")


def time_steps_text(text: str) -> str:
    """Comma-separated time steps, each in [1, MAX_T] (``snn-eval --T 8,16,32``); returned as given."""
    for p in str(text).replace(" ", "").split(","):
        if p and re.fullmatch(r"[+-]?\d+", p) and int(p) > MAX_T:     # the rest: parse_T, with the work
            raise argparse.ArgumentTypeError(f"time steps are at most {MAX_T:_}, got {p} (in {text!r})")
    return str(text)


THREADS_HELP = ("CPU threads for torch (default: torch's, one per core); on a machine busy with other jobs 1 is "
                "often several times faster (2-thread kernels stall when a core is taken)")


def add_threads_option(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--threads N`` (N >= 1), the same in every command that runs torch on a CPU."""
    p.add_argument("--threads", type=thread_count, default=None,
                   help=prefix + THREADS_HELP + f" (at most {MAX_THREADS})")


def apply_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` when ``--threads`` was given (argparse has checked n >= 1)."""
    if n is not None:
        import torch
        torch.set_num_threads(int(n))


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``with torch_threads(args.threads): ...``: :func:`apply_threads` inside, torch's count restored after
    (commands also run in-process, from tests and scripts)."""
    import torch
    before = torch.get_num_threads()
    try:
        apply_threads(n)
        yield
    finally:
        torch.set_num_threads(before)


def non_negative_int(text: str) -> int:
    """An integer in [0, INT_MAX]."""
    v = _int(text, "a non-negative integer")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    if v > INT_MAX:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer up to {INT_MAX:_}, got {text!r}")
    return v


def seed(text: str) -> int:
    """A seed in [0, 2**31 - 1]: what the .net format, numpy and the RSM generator all hold."""
    v = _int(text, f"an integer seed in [0, {SEED_MAX}]")
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, {SEED_MAX}], got {text!r}")
    return v


def _float(text: str, what: str) -> float:
    try:
        v = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0 (e.g. a learning rate)."""
    v = _float(text, "a finite number > 0")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def fraction(text: str) -> float:
    """A number in [0, 1) (e.g. label smoothing, a mask ratio)."""
    v = _float(text, "a number in [0, 1)")
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return v


def fraction_list(text: str) -> list[float]:
    """Comma-separated numbers in [0, 1), at least one (e.g. ``--levels 0.25,0.5,0.75``)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated ratios in [0, 1) such as 0.25,0.5, got {text!r}")
    out = []
    for p in parts:
        try:
            out.append(fraction(p))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"{p!r} is not a ratio in [0, 1) (in {text!r})") from None
    return sorted(set(out))


def positive_int_list(text: str) -> list[int]:
    """Comma-separated positive integers, at least one, sorted and deduplicated (e.g. ``--T 8,16,32``)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 8,16,32, got {text!r}")
    out = set()
    for p in parts:
        try:
            out.add(positive_int(p))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"{p!r} is not a positive integer (in {text!r})") from None
    return sorted(out)


_DEVICE = re.compile(r"(cpu|cuda(:\d+)?)")


def device_name(text: str, *, allow_auto: bool = False) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (and ``auto`` where allowed); availability is checked when used."""
    s = str(text).strip().lower()
    if (allow_auto and s == "auto") or _DEVICE.fullmatch(s):
        return s
    names = "auto, cpu, cuda or cuda:N" if allow_auto else "cpu, cuda or cuda:N"
    raise argparse.ArgumentTypeError(f"expected a device name ({names}), got {text!r}")


def device_or_auto(text: str) -> str:
    return device_name(text, allow_auto=True)


def list_text(text: str) -> str:
    """A non-empty comma-separated list (``--pepper 0.01,0.05``): an empty value is an error, not 'none'."""
    if not str(text).strip(" ,\t\n"):
        raise argparse.ArgumentTypeError("expected a comma-separated list such as 0.01,0.05, got an empty string "
                                         "(leave the option out for none)")
    return str(text)


def path_text(text: str) -> str:
    """A non-empty path."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    if "\0" in str(text):
        raise argparse.ArgumentTypeError(f"a path cannot contain a NUL character: {text!r}")
    return str(text)



# ----------------------------------------------------------------------------------------
# options every command spells the same way: --dataset NAME, --data DIR, --mask SITE=R ...

DATASET_OPTION_HELP = ("dataset name: {names} (default: {default})")
DATA_OPTION_HELP = ("folder the dataset's files are read from (default: the dataset's standard location; digits "
                    "needs none: it comes with scikit-learn)")


def dataset_names() -> tuple[str, ...]:
    """Every dataset name, without importing torch (the registry's names, from ``mst_lava.data``)."""
    from mst_lava.data import DEFAULT_PRESET
    from mst_lava.data.files import STATIC_NAMES
    return tuple(dict.fromkeys([*STATIC_NAMES, *DEFAULT_PRESET]))


def dataset_name(text: str) -> str:
    """A dataset name the registry knows (``--dataset NAME``)."""
    s = str(text).strip()
    names = dataset_names()
    if s not in names:
        hint = f"; {text!r} is a folder: give it as --data {text}" if s and Path(s).expanduser().is_dir() else ""
        raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; choose from {', '.join(names)}{hint}")
    return s


def _data_dir_problem(text: str) -> str | None:
    """Why ``text`` is not usable as ``--data DIR`` (None when it is an existing folder)."""
    p = Path(text).expanduser()
    if p.is_dir():
        return None
    what = "a file" if p.exists() else "not there"
    hint = f" (for the dataset named {text!r} use --dataset {text})" if str(text).strip() in dataset_names() else ""
    return f"--data is the folder the dataset's files are read from; {text!r} is {what}{hint}"


def data_dir(text: str) -> str:
    """An existing folder (``--data DIR``)."""
    s = path_text(text)
    problem = _data_dir_problem(s)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return s


def add_dataset_options(p: argparse.ArgumentParser, default: str, *, legacy_data_name: bool = False) -> None:
    """``--dataset NAME`` and ``--data DIR``, with the same meaning in every command.

    ``legacy_data_name`` (``mst run``/``mst verify``, for one release): ``--data`` is checked after parsing by
    :func:`resolve_dataset_options`, which still takes ``--data NAME`` and ``--data-root DIR`` with a
    deprecation message."""
    p.add_argument("--dataset", metavar="NAME", type=dataset_name, default=None,
                   help=DATASET_OPTION_HELP.format(names=", ".join(dataset_names()), default=default))
    help_data = DATA_OPTION_HELP
    if legacy_data_name:
        help_data += ("; until the next release --data NAME (a dataset name that is not a folder) still means "
                      "--dataset NAME, with a deprecation message")
    p.add_argument("--data", metavar="DIR", type=path_text if legacy_data_name else data_dir, default=None,
                   help=help_data)
    if legacy_data_name:
        p.add_argument("--data-root", metavar="DIR", type=path_text, default=None,
                       help="deprecated spelling of --data DIR, accepted with a message until the next release")


def resolve_dataset_options(args, command: str, warn=None) -> None:
    """``mst run``/``mst verify``: ``args.dataset`` (a name or None) and ``args.data`` (an existing folder or None).

    Until the next release the old spellings work with a deprecation message on stderr: ``--data NAME``
    (a known dataset name that is not an existing folder) as ``--dataset NAME``, ``--data-root DIR`` as
    ``--data DIR``. Anything else that is not a folder is an ``MSTError``."""
    from mst_lava.errors import MSTError
    if warn is None:
        def warn(msg):
            print(f"mst {command}: warning: {msg}", file=sys.stderr)
    data, root = args.data, getattr(args, "data_root", None)
    if data is not None and str(data).strip() in dataset_names() and not Path(data).expanduser().is_dir():
        if args.dataset is not None:
            raise MSTError(f"--data {data}: --data is the folder the dataset's files are read from and {data!r} is "
                           f"no folder; --dataset {args.dataset} already names the dataset")
        warn(f"--data NAME is deprecated and stops working in the next release: --data is now the dataset's "
             f"folder in every command; use --dataset {data.strip()}")
        args.dataset, args.data = data.strip(), None
    if root is not None:
        warn("--data-root DIR is deprecated and stops working in the next release: use --data DIR")
        if args.data is not None:
            raise MSTError("--data and --data-root both give the dataset's folder: give it once, as --data DIR")
        args.data = root
    if getattr(args, "data_root", None) is not None:
        args.data_root = None
    if args.data is not None:
        problem = _data_dir_problem(args.data)
        if problem:
            raise MSTError(problem)


MASK_RULE = ("Each --mask is one Random Spike Masking configuration: SITE=R words separated by spaces or commas "
             "(--mask Q=0.75 K=0.75 A=0.75 is --mask Q=0.75,K=0.75,A=0.75), R in [0, 1) the probability of "
             "dropping a spike; SITE@BLOCK=R masks one block only. Sites: SC1 Q K A V AV Proj SC2 MLP1 MLP2 "
             "embed merge (act in the ResNet/VGG baselines).")


class MaskAction(argparse.Action):
    """``--mask SITE=R ...``: one occurrence is one RSM configuration, in every command.

    ``configurations=False`` (a command that uses one configuration): the value is that configuration's
    words and a second ``--mask`` is an argparse error. ``configurations=True``: the value is a list with
    one list of words per occurrence. The command reads each configuration with :func:`parse_mask_words`
    (sites, ratios, a site given twice, keywords such as ``ckpt``) once its checkpoint is known."""

    def __init__(self, option_strings, dest, configurations: bool = False, **kw):
        kw.setdefault("nargs", "+")
        kw.setdefault("metavar", "SITE=R")
        super().__init__(option_strings, dest, **kw)
        self.configurations = configurations

    def __call__(self, parser, namespace, values, option_string=None):
        words = [str(v) for v in values]
        blank = next((w for w in words if not w.strip(" ,\t\n")), None)
        if blank is not None:     # `--mask ''`: an empty configuration is a mistake, not "no masking"
            parser.error(f"argument {option_string}: got an empty value {blank!r}; give SITE=R words, e.g. "
                         f"{option_string} Q=0.75 K=0.75 (leave {option_string} out for no masking)")
        if self.configurations:
            prev = getattr(namespace, self.dest, None)
            groups = [] if prev is None or prev is self.default else list(prev)
            setattr(namespace, self.dest, groups + [words])
            return
        if getattr(namespace, self.dest, None) is not self.default:
            parser.error(f"argument {option_string}: given twice; one --mask is one configuration and this command "
                         f"uses one: put every site in a single {option_string}, e.g. {option_string} Q=0.75 K=0.75 "
                         "A=0.75")
        setattr(namespace, self.dest, words)


def parse_mask_words(words) -> dict[str, float]:
    """One ``--mask`` configuration's words → ``{site: ratio}`` (``rsm.parse_mask_spec``), refusing a site given
    twice (``Q=0.5 Q=0.75``: no silent last-wins); an ``MSTError`` saying what is wrong otherwise."""
    from mst_lava.errors import MSTError
    from mst_lava.model.rsm import parse_mask_spec
    out: dict[str, float] = {}
    for w in words or ():
        for part in str(w).split(","):
            if not part.strip():
                continue
            one = parse_mask_spec([part])
            for key in one.keys() & out.keys():
                raise MSTError(f"--mask gives {key} twice ({key}={out[key]:g} and {part.strip()}); give each site "
                               "once in a configuration")
            out.update(one)
    return out


def add_mask_option(p: argparse.ArgumentParser, default_help: str, *, configurations: bool = False,
                    keywords: dict | None = None, default=None) -> None:
    """``--mask SITE=R ...`` with the one rule (:data:`MASK_RULE`) in its help; ``keywords``: words the command
    takes alone instead of a configuration, with what they mean (the command interprets them)."""
    parts = [MASK_RULE, "Repeat --mask to evaluate several configurations, each on its own." if configurations else
             "This command uses one configuration: --mask may be given once."]
    parts += [f"--mask {k}: {v}." for k, v in (keywords or {}).items()]
    parts.append(f"Default: {default_help}.")
    p.add_argument("--mask", action=MaskAction, configurations=configurations, default=default, help=" ".join(parts))
