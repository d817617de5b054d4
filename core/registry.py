"""Plugin loading and the component registry.

Plugins are loaded one entry point at a time, each in its own ``try`` (not pluggy's
``load_setuptools_entrypoints``, which stops at the first broken plugin): a plugin that fails to import, declares
an unknown hook, raises inside a hook or returns a malformed component is recorded with its distribution name and
left out; everything else keeps working.

The boundary (:func:`run_plugin_code`): a plugin's import and each of its hook calls run in a daemon thread, with
``sys.stdout`` sent to stderr (stdout is data: ``mmcore plugins --json``, ``mmcore search``) and ``sys.stdout`` /
``sys.stderr`` put back afterwards, whatever the plugin did to them. Whatever that code raises (``SystemExit``,
``GeneratorExit``, a ``KeyboardInterrupt`` of its own) is a failure of that plugin; a real Ctrl-C is delivered to
the main thread, which is only waiting, and stops the program as usual. Code that has not returned within
``MMCORE_PLUGIN_IMPORT_TIMEOUT`` seconds is recorded as failed and left running in its thread (a daemon thread
does not delay the exit). A component's ``build`` (:meth:`Registry.build`) runs in the main thread (it may take
long: weights are loaded there): every exception but ``KeyboardInterrupt`` (taken for a Ctrl-C) is reported.
Not covered: ``os._exit``, writes to file descriptor 1 from C code, a non-daemon thread the plugin starts
explicitly, and what the built objects do later. Plugins are trusted code.

Environment switches:

``MMCORE_DISABLE_PLUGIN_AUTOLOAD=1``  load only the built-ins
``MMCORE_PLUGINS=dist1,dist2``        load only these distributions (plus the built-ins)
``MMCORE_STRICT_PLUGINS=1``           re-raise the first plugin error (for plugin authors)
``MMCORE_TRACE_PLUGINS=1``            print each loading step (and its time) to stderr
``MMCORE_PLUGIN_IMPORT_TIMEOUT=60``   seconds a plugin's import (or one hook call) may take; 0: no bound
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import itertools
import os
import re
import sys
import threading
import time
from importlib import metadata

import attrs
import pluggy

from . import hookspecs
from .contracts import KINDS, Component, ConfigError
from .protocols import contract_problems

BUILTIN_DISTRIBUTION = "mmcore"
BUILTIN_MODULES = (
    "mmcore.builtins.encoders",
    "mmcore.builtins.anchors",
    "mmcore.builtins.losses",
    "mmcore.builtins.synthetic",
    "mmcore.builtins.mixture",
    "mmcore.builtins.evaluators",
)
HOOK_NAMES = frozenset([f"mmcore_{kind}" for kind in KINDS] + ["mmcore_commands"])
KIND_LABELS = {
    "encoders": "encoder",
    "anchor_strategies": "anchor strategy",
    "losses": "loss",
    "evaluators": "evaluator",
    "datasets": "dataset",
}


DEFAULT_IMPORT_TIMEOUT = 60.0
"""Seconds a plugin's import may take: a torch-based plugin imported cold on a loaded 2-core machine takes some
10-20 s; the first-party hook modules take milliseconds."""
MAX_COMPONENTS_PER_HOOK = 10_000
"""More than this from one hook is a runaway generator, not a plugin."""


class PluginError(Exception):
    """A plugin could not be loaded (raised only in strict mode)."""


class PluginCodeError(Exception):
    """Plugin code run through :func:`run_plugin_code` raised (any ``BaseException``, the original is
    ``__cause__``) or did not return in time. ``str()`` is a one-line summary."""


class PluginTimeout(PluginCodeError):
    """Plugin code did not return within the time bound (it is left running in its daemon thread)."""


class UnknownComponentError(LookupError):
    """A recipe names a component that no loaded plugin provides (or that two provide)."""


class ComponentBuildError(Exception):
    """A component's build failed or returned something that breaks its contract. ``problems`` holds one
    ``"<recipe path>: <what is wrong>"`` line each, naming the component and its distribution."""

    def __init__(self, problems: list):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@attrs.define
class PluginRecord:
    """One loaded (or failed) plugin, as ``mmcore plugins`` shows it."""

    name: str
    distribution: str
    version: str
    entry_point: str = ""
    location: str = ""
    components: dict = attrs.field(factory=dict)
    error: str | None = None
    commands: list = attrs.field(factory=list)  # the subcommands its mmcore_commands hook added


@attrs.define
class Registry:
    """Components by kind and name, and a record of every plugin that was (or failed to be) loaded."""

    plugins: list = attrs.field(factory=list)
    components: dict = attrs.field(factory=lambda: {k: {} for k in KINDS})
    owners: dict = attrs.field(factory=lambda: {k: {} for k in KINDS})
    conflicts: dict = attrs.field(factory=dict)
    command_hooks: list = attrs.field(factory=list)

    def names(self, kind: str) -> list:
        return sorted(self.components[kind])

    def distribution_of(self, kind: str, name: str) -> str:
        return self.owners[kind][name]

    def build(self, kind: str, name: str, config, context, path: str):
        """Build component ``kind:name`` with its structured ``config`` and check the result against its contract
        (:mod:`mmcore.protocols`). Raises :class:`ComponentBuildError` with lines at recipe path ``path``: a
        :class:`mmcore.ConfigError` names ``path.<field>``; a crash or a broken contract names the distribution."""
        component = self.get(kind, name)
        owner = self.distribution_of(kind, name)
        try:
            with plugin_streams():
                built = component.build(config, context)
                problems = contract_problems(kind, built)
        except KeyboardInterrupt:  # taken for a Ctrl-C (in the main thread the two cannot be told apart)
            raise
        except ConfigError as exc:
            raise ComponentBuildError([f"{path}.{exc.field}: {exc}"]) from exc
        except BaseException as exc:  # noqa: BLE001 - a broken plugin (even sys.exit) is reported, no traceback
            raise ComponentBuildError([f"{path}: building {name!r} (from {owner}) failed: {_summary(exc)}"]) from exc
        if problems:
            label = KIND_LABELS[kind]
            raise ComponentBuildError([f"{path}: {label} {name!r} (from {owner}) breaks the {label} contract: {p}"
                                       for p in problems])
        return built

    def get(self, kind: str, name: str) -> Component:
        """Look up a component, or raise UnknownComponentError saying what is installed and what is close."""
        if (kind, name) in self.conflicts:
            dists = " and ".join(self.conflicts[kind, name])
            raise UnknownComponentError(
                f"{KIND_LABELS[kind]} {name!r} is provided by more than one distribution ({dists}); "
                f"uninstall one of them, or restrict loading with MMCORE_PLUGINS=<distribution>"
            )
        try:
            return self.components[kind][name]
        except KeyError:
            pass
        installed = self.names(kind)
        message = f"unknown {KIND_LABELS[kind]} {name!r}; installed: {', '.join(installed) or '(none)'}"
        close = difflib.get_close_matches(str(name), installed, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        broken = [p for p in self.plugins if p.error]
        for plugin in broken:
            message += f"\n  note: plugin {plugin.distribution} failed to load and may provide it: {plugin.error}"
        raise UnknownComponentError(message)


def _trace(message: str) -> None:
    if os.environ.get("MMCORE_TRACE_PLUGINS"):
        print(f"mmcore plugins: {message}", file=sys.stderr)


def _strict() -> bool:
    return os.environ.get("MMCORE_STRICT_PLUGINS", "") not in ("", "0")


_WARNED: set = set()


def _warn_once(message: str) -> None:
    """Print ``mmcore: warning: MESSAGE`` to stderr, once per process."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"mmcore: warning: {message}", file=sys.stderr)


def plugin_timeout() -> float | None:
    """Seconds plugin code may run at one boundary (``MMCORE_PLUGIN_IMPORT_TIMEOUT``; None: no bound)."""
    raw = os.environ.get("MMCORE_PLUGIN_IMPORT_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_IMPORT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0 or seconds == float("inf"):
        _warn_once(f"MMCORE_PLUGIN_IMPORT_TIMEOUT={raw!r} is not a number of seconds (0: no bound); "
                   f"using {DEFAULT_IMPORT_TIMEOUT:g}")
        return DEFAULT_IMPORT_TIMEOUT
    return seconds or None


def _summary(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 500 characters, whatever the exception's ``__str__`` does."""
    if isinstance(exc, PluginCodeError):  # already summarised
        return str(exc)
    try:
        # torch's C++ errors append "Exception raised from ... frame #0: ..." after their message: not for a user
        text = " ".join(str(exc).split("Exception raised from ")[0].split())
    except BaseException:  # noqa: BLE001 - a hostile __str__
        text = "(message could not be read)"
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


@contextlib.contextmanager
def plugin_streams():
    """While plugin code runs, its ``print`` goes to stderr; afterwards ``sys.stdout`` and ``sys.stderr`` are
    what they were before, even if that code replaced them."""
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def run_plugin_code(func, what: str, timeout: float | None):
    """Return ``func()``, run in a daemon thread within :func:`plugin_streams`.

    Raises :class:`PluginCodeError` from whatever ``func`` raised (any ``BaseException``: in that thread a
    ``KeyboardInterrupt`` is the plugin's own, since signals reach the main thread only), or
    :class:`PluginTimeout` ("did not finish WHAT within N s") when it has not returned after ``timeout`` seconds
    (None: no bound). A Ctrl-C while waiting raises ``KeyboardInterrupt`` here, in the caller."""
    outcome = {}

    def target():
        try:
            outcome["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - everything plugin code raises is its failure
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"mmcore plugin: {what}", daemon=True)
    with plugin_streams():
        thread.start()
        thread.join(timeout)
    if thread.is_alive():
        raise PluginTimeout(f"did not finish {what} within {timeout:g} s (MMCORE_PLUGIN_IMPORT_TIMEOUT)")
    if "error" in outcome:
        raise PluginCodeError(_summary(outcome["error"])) from outcome["error"]
    return outcome.get("value")


def _fail(record: PluginRecord, exc: BaseException, where: str) -> None:
    cause = exc.__cause__ if isinstance(exc, PluginCodeError) and exc.__cause__ is not None else exc
    record.error = f"{where}: {_summary(exc)}"
    _trace(f"{record.distribution}: {record.error}")
    if isinstance(exc, PluginTimeout):  # it cost every command that long: say so, not only in `mmcore plugins`
        _warn_once(f"plugin {record.distribution} {exc}; it is left out")
    if _strict():
        raise PluginError(f"plugin {record.distribution} ({record.entry_point}) {where}: {record.error}") from cause


def _check_component(item: object) -> Component:
    if not isinstance(item, Component):
        raise TypeError(f"expected mmcore.Component, got {type(item).__name__}")
    if not isinstance(item.name, str) or not item.name:
        raise TypeError(f"component name must be a non-empty string, got {item.name!r}")
    if not attrs.has(item.config):
        raise TypeError(f"component {item.name!r}: config must be an attrs class, got {item.config!r}")
    if not callable(item.build):
        raise TypeError(f"component {item.name!r}: build must be callable")
    return item


def _components(result) -> list:
    """A hook's result (an iterable of components, or None) as a checked list of at most
    :data:`MAX_COMPONENTS_PER_HOOK` components."""
    items = list(itertools.islice(result or [], MAX_COMPONENTS_PER_HOOK + 1))
    if len(items) > MAX_COMPONENTS_PER_HOOK:
        raise ValueError(f"returned more than {MAX_COMPONENTS_PER_HOOK} components")
    return [_check_component(item) for item in items]


def _builtin_version() -> str:
    try:
        return metadata.version("mmcore-framework")
    except metadata.PackageNotFoundError:
        return "unknown"


def _normalize(name: str) -> str:
    """A distribution or entry-point name as PEP 503 compares them (``mmcore_Foo.bar`` == ``mmcore-foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _warn_unknown_allowed(allowed: list, points: list) -> None:
    """Warn (once per process) about each ``MMCORE_PLUGINS`` name that matches no installed plugin."""
    dists = sorted({ep.dist.name for ep in points if ep.dist})
    known = {_normalize(n) for n in dists} | {_normalize(ep.name) for ep in points}
    known |= {_normalize(BUILTIN_DISTRIBUTION), _normalize("mmcore-framework")}
    for name in allowed:
        if _normalize(name) in known:
            continue
        message = (f"MMCORE_PLUGINS names {name}, which is not installed; installed: "
                   f"{', '.join(dists) or '(no plugins)'}")
        close = difflib.get_close_matches(name, dists + sorted({ep.name for ep in points}), n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]}?"
        _warn_once(message)


def _entry_points() -> list:
    if os.environ.get("MMCORE_DISABLE_PLUGIN_AUTOLOAD", "") not in ("", "0"):
        _trace("autoload disabled by MMCORE_DISABLE_PLUGIN_AUTOLOAD")
        return []
    allowed = [n.strip() for n in os.environ.get("MMCORE_PLUGINS", "").split(",") if n.strip()]
    allow = {_normalize(n) for n in allowed}
    every = list(metadata.entry_points(group="mmcore"))
    if allowed:
        _warn_unknown_allowed(allowed, every)
    points = []
    for ep in every:
        dist = ep.dist.name if ep.dist else "?"
        if allow and _normalize(dist) not in allow and _normalize(ep.name) not in allow:
            _trace(f"skipping {dist} (not in MMCORE_PLUGINS)")
            continue
        points.append(ep)
    return sorted(points, key=lambda ep: ((ep.dist.name if ep.dist else ""), ep.name))


def build_registry() -> Registry:
    """Load the built-ins and every installed plugin into a fresh registry."""
    pm = pluggy.PluginManager("mmcore")
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    records = {}
    timeout = plugin_timeout()

    version = _builtin_version()
    for module_name in BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        records[module_name] = PluginRecord(
            "mmcore", BUILTIN_DISTRIBUTION, version, "(built-in)", os.path.dirname(__file__)
        )

    for ep in _entry_points():
        dist = ep.dist.name if ep.dist else "?"
        record = PluginRecord(
            ep.name,
            dist,
            ep.dist.version if ep.dist else "?",
            f"{ep.name} = {ep.value}",
            str(ep.dist.locate_file("")) if ep.dist else "",
        )
        records[f"ep:{ep.name}:{dist}"] = record
        _trace(f"loading {record.entry_point} from {dist} {record.version}")
        started = time.perf_counter()
        try:
            module = run_plugin_code(ep.load, "importing", timeout)
            _trace(f"imported {ep.value} in {time.perf_counter() - started:.2f} s")
            with plugin_streams():
                pm.register(module, name=f"ep:{ep.name}:{dist}")
                unknown = [
                    n for n in dir(module)
                    if hasattr(getattr(module, n, None), "mmcore_impl") and n not in HOOK_NAMES
                ]
                if unknown:
                    pm.unregister(name=f"ep:{ep.name}:{dist}")
                    raise PluginError(f"unknown hook(s) {', '.join(unknown)}; valid hooks: "
                                      + ", ".join(sorted(HOOK_NAMES)))
        except KeyboardInterrupt:  # a real Ctrl-C (the plugin's own came back as PluginCodeError)
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure of a third-party plugin is isolated
            _fail(record, exc, "failed to load")

    pm.check_pending()

    for kind in KINDS:
        for impl in getattr(pm.hook, f"mmcore_{kind}").get_hookimpls():
            record = records[impl.plugin_name]
            if record.error:
                continue
            try:
                items = run_plugin_code(lambda f=impl.function: _components(f()), f"calling mmcore_{kind}",
                                        timeout)
            except PluginCodeError as exc:
                _fail(record, exc, "hung" if isinstance(exc, PluginTimeout) else f"raised in mmcore_{kind}")
                continue
            for item in items:
                _add(registry, kind, item, record)

    for impl in pm.hook.mmcore_commands.get_hookimpls():
        record = records[impl.plugin_name]
        if not record.error:
            registry.command_hooks.append((record, impl.function))

    registry.plugins = _merge_by_distribution(list(records.values()))
    return registry


def _add(registry: Registry, kind: str, item: Component, record: PluginRecord) -> None:
    owner = registry.owners[kind].get(item.name)
    if owner is not None and owner != record.distribution:
        registry.conflicts[kind, item.name] = [owner, record.distribution]
        del registry.components[kind][item.name]
        _trace(f"duplicate {KIND_LABELS[kind]} {item.name!r} from {owner} and {record.distribution}")
        if _strict():
            raise PluginError(f"{KIND_LABELS[kind]} {item.name!r} registered by both {owner} and {record.distribution}")
        return
    if (kind, item.name) in registry.conflicts:
        registry.conflicts[kind, item.name].append(record.distribution)
        return
    registry.components[kind][item.name] = item
    registry.owners[kind][item.name] = record.distribution
    record.components.setdefault(kind, []).append(item.name)


def _merge_by_distribution(records: list) -> list:
    """One row per distribution (the built-ins are several modules of one distribution)."""
    merged = {}
    for record in records:
        key = (record.distribution, record.entry_point if record.error else "")
        if key not in merged:
            merged[key] = record
            continue
        target = merged[key]
        for kind, names in record.components.items():
            target.components.setdefault(kind, []).extend(names)
    return list(merged.values())


_CACHE: dict = {}


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, loaded on first use."""
    if refresh or "registry" not in _CACHE:
        _CACHE["registry"] = build_registry()
    return _CACHE["registry"]
