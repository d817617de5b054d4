"""Plugin loading and the component registry.

Plugins are loaded one entry point at a time, each in its own ``try`` (not pluggy's
``load_setuptools_entrypoints``, which stops at the first broken plugin): a plugin that fails to import, declares
an unknown hook, raises inside a hook or returns a malformed component is recorded with its distribution name and
left out; everything else keeps working.

Environment switches:

``MMCORE_DISABLE_PLUGIN_AUTOLOAD=1``  load only the built-ins
``MMCORE_PLUGINS=dist1,dist2``        load only these distributions (plus the built-ins)
``MMCORE_STRICT_PLUGINS=1``           re-raise the first plugin error (for plugin authors)
``MMCORE_TRACE_PLUGINS=1``            print each loading step to stderr
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
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


class PluginError(Exception):
    """A plugin could not be loaded (raised only in strict mode)."""


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
            built = component.build(config, context)
        except ConfigError as exc:
            raise ComponentBuildError([f"{path}.{exc.field}: {exc}"]) from exc
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, never a traceback
            raise ComponentBuildError([f"{path}: building {name!r} (from {owner}) failed: "
                                       f"{type(exc).__name__}: {exc}"]) from exc
        problems = contract_problems(kind, built)
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


def _summary(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _fail(record: PluginRecord, exc: BaseException, where: str) -> None:
    record.error = f"{where}: {_summary(exc)}"
    _trace(f"{record.distribution}: {record.error}")
    if _strict():
        raise PluginError(f"plugin {record.distribution} ({record.entry_point}) {where}") from exc


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


def _builtin_version() -> str:
    try:
        return metadata.version("mmcore-framework")
    except metadata.PackageNotFoundError:
        return "unknown"


def _entry_points() -> list:
    if os.environ.get("MMCORE_DISABLE_PLUGIN_AUTOLOAD", "") not in ("", "0"):
        _trace("autoload disabled by MMCORE_DISABLE_PLUGIN_AUTOLOAD")
        return []
    allow = {n.strip().lower() for n in os.environ.get("MMCORE_PLUGINS", "").split(",") if n.strip()}
    points = []
    for ep in metadata.entry_points(group="mmcore"):
        dist = ep.dist.name if ep.dist else "?"
        if allow and dist.lower() not in allow and ep.name.lower() not in allow:
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
        try:
            module = ep.load()
            pm.register(module, name=f"ep:{ep.name}:{dist}")
            unknown = [
                n for n in dir(module)
                if hasattr(getattr(module, n, None), "mmcore_impl") and n not in HOOK_NAMES
            ]
            if unknown:
                pm.unregister(name=f"ep:{ep.name}:{dist}")
                raise PluginError(f"unknown hook(s) {', '.join(unknown)}; valid hooks: "
                                  + ", ".join(sorted(HOOK_NAMES)))
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party import is isolated
            _fail(record, exc, "failed to load")

    pm.check_pending()

    for kind in KINDS:
        for impl in getattr(pm.hook, f"mmcore_{kind}").get_hookimpls():
            record = records[impl.plugin_name]
            if record.error:
                continue
            try:
                items = [_check_component(item) for item in (impl.function() or [])]
            except Exception as exc:  # noqa: BLE001
                _fail(record, exc, f"raised in mmcore_{kind}")
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
