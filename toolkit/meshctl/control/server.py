"""Running the control server: the control key in the state dir, the store, and uvicorn.

The control private key is created in the state dir on first start (`control.key`, 0600, in a
0700 directory) and never anywhere else; `control.pub` (0644) is written beside it so deploy
tooling can read and pin the public half.
"""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from ..keys import ControlPrivateKey, ControlPublicKey, ensure_private_dir, load_or_create_private_key
from .app import create_app
from .config import ControlConfig, parse_listen
from .store import Store

__all__ = ["ensure_control_key", "read_control_pub", "serve"]

log = logging.getLogger("meshctl.control")


def ensure_control_key(state_dir: Path) -> ControlPrivateKey:
    ensure_private_dir(state_dir)
    key, created = load_or_create_private_key(state_dir / "control.key", ControlPrivateKey)
    pub_text = key.public_key().to_text() + "\n"
    pub = state_dir / "control.pub"
    if not pub.exists() or pub.read_text() != pub_text:
        tmp = pub.with_suffix(".pub.tmp")
        tmp.write_text(pub_text)
        tmp.chmod(0o644)
        tmp.replace(pub)
    if created:
        log.info("created control key %s in %s", key.short(), state_dir)
    return key


def read_control_pub(state_dir: Path) -> ControlPublicKey:
    return ControlPublicKey.from_text((state_dir / "control.pub").read_text())


def serve(config: ControlConfig) -> None:
    """Run until interrupted. Applies pending migrations; refuses a database newer than this code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    key = ensure_control_key(config.state_dir)
    store = Store.open(config.db_url)
    app = create_app(config, store, key)
    host, port = parse_listen(config.listen)
    log.info("control server %s listening on %s:%d (%s)", key.public_key().to_text(), host, port,
             "TLS" if config.tls_cert else "plain HTTP")
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False,
                    ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
                    ssl_keyfile=str(config.tls_key) if config.tls_key else None,
                    timeout_graceful_shutdown=3)
    finally:
        store.close()
