"""Keep third-party usage telemetry off: Falconet is self-hosted and must not phone home.

OpenVINO's Python package and NNCF use ``openvino_telemetry``: ``import openvino`` already writes a
client id and a stats file under the user's home, and converting or quantizing a model posts events
from a forked process. Consent counts as given when the user never answered (no consent file).
Neither library offers a per-call switch; both decline when they see a CI job (``CI=true``, their
``disable_in_ci``). :func:`telemetry_declined` sets that for the duration of the import or the
conversion and puts the environment back afterwards. The documented opt-out
(``opt_in_out --opt_out``) would change the user's choice for every program, which is not ours to do.

The environment is process-wide: while a block runs, other threads of the process (a server
answering requests, say) also see ``CI=true``. The lock only keeps our own blocks from restoring
each other's value out of order.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

# Re-entrant so that code inside a block may call import_openvino() or open another block
# without deadlocking (nothing nests today: the exporter imports before it converts).
_LOCK = threading.RLock()


@contextlib.contextmanager
def telemetry_declined() -> Iterator[None]:
    """OpenVINO / NNCF code run inside this block sees telemetry declined."""
    with _LOCK:
        before = os.environ.get("CI")
        os.environ["CI"] = "true"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("CI", None)
            else:
                os.environ["CI"] = before


def import_openvino() -> Any:
    """``import openvino`` without the telemetry set-up it does on import."""
    with telemetry_declined():
        import openvino

    return openvino
