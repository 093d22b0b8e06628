"""Where the pyinfra roles live and how they are loaded.

Installed from a wheel, the roles ship as package data (`meshctl/_data/roles`); in a checkout they are the
top-level `roles/` directory. Role modules are loaded by file path under a private package name
(`meshctl_roles.<role>.deploy`), never as a top-level `roles` package, so nothing on `sys.path` can shadow them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import RoleError

__all__ = ["PACKAGE", "ROLE_ORDER", "load_role", "role_defaults", "role_dir", "roles_dir"]

#: the order roles are applied in; each later role may use facts read back after the earlier ones
ROLE_ORDER = ("common", "control", "derp", "node", "ssh")
PACKAGE = "meshctl_roles"


def roles_dir() -> Path:
    """The roles directory: package data when installed, else the checkout's `roles/`."""
    here = Path(__file__).resolve().parent.parent  # .../meshctl
    for candidate in (here / "_data" / "roles", here.parent.parent / "roles"):
        if (candidate / "common" / "deploy.py").is_file():
            return candidate
    raise RoleError(f"cannot find the meshctl roles (looked in {here / '_data' / 'roles'} and "
                    f"{here.parent.parent / 'roles'})", hint="reinstall meshctl")


def role_dir(name: str) -> Path:
    if name not in ROLE_ORDER:
        raise RoleError(f"unknown role {name!r}; want one of {', '.join(ROLE_ORDER)}")
    return roles_dir() / name


def _package() -> ModuleType:
    pkg = sys.modules.get(PACKAGE)
    if pkg is not None:
        return pkg
    root = roles_dir()
    spec = importlib.util.spec_from_file_location(PACKAGE, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    if spec is None or spec.loader is None:
        raise RoleError(f"cannot load the roles package from {root}")
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = pkg
    spec.loader.exec_module(pkg)
    return pkg


def load_role(name: str) -> Callable[..., Any]:
    """The role's `@deploy` function (`apply` in `roles/<name>/deploy.py`)."""
    role_dir(name)
    _package()
    try:
        module = importlib.import_module(f"{PACKAGE}.{name}.deploy")
    except ImportError as err:
        raise RoleError(f"role {name}: cannot import its deploy module: {err}") from None
    fn = getattr(module, "apply", None)
    if not callable(fn):
        raise RoleError(f"role {name}: deploy.py has no apply() function")
    return fn  # type: ignore[no-any-return]


def role_defaults(name: str) -> dict[str, Any]:
    """The role's DEFAULTS (lowest-precedence data, overridden by inventory data)."""
    role_dir(name)
    _package()
    module = importlib.import_module(f"{PACKAGE}.{name}.defaults")
    return dict(getattr(module, "DEFAULTS", {}))
