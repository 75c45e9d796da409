"""POS/1: the ECR/1 messages over HTTP for POS apps on the store LAN."""
from ._app import STATUS_OF_ERR, UNAUTHORIZED, PosApp, make_app
from ._metrics import Metrics

__all__ = ["STATUS_OF_ERR", "UNAUTHORIZED", "Metrics", "PosApp", "make_app"]
