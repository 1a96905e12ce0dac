"""Python 3.11 compatibility shim for lava-nc 0.10.0, applied at import time.

The fault
    ``lava/magma/compiler/var_model.py`` (lava-nc 0.10.0) declares three dataclasses
    (``CoreEncoder``, ``ChipEncoder``, ``AxonEncoder``) whose fields default to an
    *instance* of the dataclass ``ByteEncoder``::

        x: ByteEncoder = ByteEncoder()

    Python 3.11 rejects unhashable (mutable) dataclass instances as field defaults
    ("mutable default <class 'ByteEncoder'> for field x is not allowed: use
    default_factory"), so ``import lava.magma.compiler.var_model`` raises, and with it
    every Lava compile and run.

The fix
    :func:`register` puts a finder at the front of ``sys.meta_path`` that intercepts
    exactly that one module. Its loader reads the module's *source* (never the cached
    ``.pyc``), rewrites each ``name: ByteEncoder = ByteEncoder()`` field into
    ``name: ByteEncoder = field(default_factory=ByteEncoder)`` and executes the result
    as the module. Each instance then gets its own ``ByteEncoder``, which is what the
    original code meant (and what Python < 3.11 gave by sharing, harmlessly, since the
    encoders are never mutated in place by lava-nc 0.10.0's CPU path). When ``lava``
    itself is first imported, the finder also makes a repeated
    ``multiprocessing.set_start_method`` of the method already in force a no-op (Lava's
    runtime asks for ``fork`` at import time; see :func:`_tolerate_same_start_method`).

    Nothing on disk is changed; site-packages stays as installed. A lava version that
    already fixed the file matches no field and loads unchanged. Python < 3.11 gets the
    same rewrite, which is equally valid there.

Use
    In the environment ``make setup`` creates, the hook is registered at interpreter start by
    a ``.pth`` file (:data:`PTH_NAME`, written by :func:`install_pth`, which ``make setup`` runs,
    and shipped in the wheel), so any ``import lava...`` works, ``from lava.lib.dl import
    netx`` included, without importing mst_lava first. The start-up line only registers the
    finder: it imports this module (standard library only) and nothing else. Elsewhere
    ``import mst_lava.lava`` registers it (``mst_lava/lava/__init__.py`` calls
    :func:`install`), which must then come before anything imports ``lava``. Registering is
    idempotent. :data:`PATCHED_FIELDS` records how many fields were rewritten (0 until the
    module is imported through the hook).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

TARGET = "lava.magma.compiler.var_model"
_FIELD_NAME = "_mst_lava_dc_field"  # injected into the module namespace; one leading underscore: no mangling
_PATTERN = r"^(?P<head>[ \t]+\w+[ \t]*:[ \t]*ByteEncoder[ \t]*=[ \t]*)ByteEncoder\(\)[ \t]*$"

# The start-up hook: a .pth file in site-packages whose one line registers the finder. It sorts
# after setuptools' ``__editable__.*.pth`` (which makes an editable mst_lava importable) and says
# nothing when mst_lava is gone (a .pth left behind must not break the interpreter).
PTH_NAME = "mst_lava_lava_compat.pth"
PTH_LINE = ("import sys; exec('try:\\n import mst_lava.lava.compat as c\\nexcept ImportError:\\n c = None\\n"
            "if c is not None:\\n c.register()')\n")

PATCHED_FIELDS = 0


def patch_source(source: str) -> tuple[str, int]:
    """Rewrite ``name: ByteEncoder = ByteEncoder()`` fields; returns (new source, number rewritten)."""
    import re
    return re.subn(_PATTERN, lambda m: f"{m.group('head')}{_FIELD_NAME}(default_factory=ByteEncoder)", source,
                   flags=re.MULTILINE)


class _PatchingLoader(importlib.abc.Loader):
    """Executes the target module from patched source; delegates everything else to the real loader."""

    def __init__(self, inner: importlib.machinery.SourceFileLoader):
        self.inner = inner

    def create_module(self, spec):
        return None  # default module creation

    def exec_module(self, module) -> None:
        global PATCHED_FIELDS
        import dataclasses
        source = self.inner.get_source(module.__name__)
        patched, n = patch_source(source)
        module.__dict__[_FIELD_NAME] = dataclasses.field
        code = compile(patched, self.inner.get_filename(module.__name__), "exec", dont_inherit=True)
        exec(code, module.__dict__)
        PATCHED_FIELDS = n

    # keep inspect/linecache working on the real file
    def get_source(self, fullname):
        return self.inner.get_source(fullname)

    def get_filename(self, fullname):
        return self.inner.get_filename(fullname)


class _VarModelFinder(importlib.abc.MetaPathFinder):
    """Finds the target module with the other finders, then swaps in :class:`_PatchingLoader`.
    On the first ``import lava`` it also applies :func:`_tolerate_same_start_method`."""

    def find_spec(self, fullname, path, target=None):
        if fullname == "lava":
            _tolerate_same_start_method()
            return None
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, _VarModelFinder):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def is_installed() -> bool:
    return any(isinstance(f, _VarModelFinder) for f in sys.meta_path)


def _tolerate_same_start_method() -> None:
    """Lava's runtime calls ``multiprocessing.set_start_method('fork')`` at import, which raises
    "context has already been set" when anything earlier in the process fixed the context (a tqdm
    bar creates a multiprocessing lock, for one). Make a repeated request for the method already
    in force a no-op; any other change still raises as before."""
    import multiprocessing as mp
    if getattr(mp.set_start_method, "_mst_tolerant", False):
        return
    original = mp.set_start_method

    def set_start_method(method, force=False):
        if not force and mp.get_start_method(allow_none=True) == method:
            return
        original(method, force=force)

    set_start_method._mst_tolerant = True
    mp.set_start_method = set_start_method


def register() -> None:
    """Put the finder at the front of ``sys.meta_path`` (idempotent); nothing else. This is all the
    start-up hook does: no Lava, numpy or multiprocessing import."""
    if not is_installed():
        sys.meta_path.insert(0, _VarModelFinder())


def install() -> None:
    """Register the import hook (idempotent). Must run before ``lava.magma.compiler.var_model`` is
    imported; if ``lava`` is imported already, the start-method tolerance is applied now."""
    register()
    if "lava" in sys.modules:
        _tolerate_same_start_method()


# ----------------------------------------------------------------------------------------
# the start-up hook in an environment's site-packages

def site_dir() -> str:
    """site-packages of the running interpreter (the virtual environment's, in ``.venv``)."""
    import sysconfig
    return sysconfig.get_paths()["purelib"]


def install_pth(directory: str | None = None) -> str:
    """Write :data:`PTH_NAME` into ``directory`` (default: :func:`site_dir`), atomically; returns its path."""
    directory = directory or site_dir()
    path = os.path.join(directory, PTH_NAME)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(PTH_LINE)
    os.replace(tmp, path)
    return path


def remove_pth(directory: str | None = None) -> bool:
    """Remove :data:`PTH_NAME` from ``directory`` (default: :func:`site_dir`); True if it was there."""
    path = os.path.join(directory or site_dir(), PTH_NAME)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
