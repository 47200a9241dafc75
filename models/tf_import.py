"""Import TensorFlow without its C++ start-up chatter on the user's terminal or journal.

TensorFlow's C++ layer writes to file descriptor 2 before Python logging exists
(``cudart_stub``, ``cuInit ... UNKNOWN ERROR (303)`` on every machine without a GPU, absl's
"All log messages before absl::InitializeLog()"), whatever ``TF_CPP_MIN_LOG_LEVEL`` says.
:func:`tensorflow` imports it with descriptor 2 redirected to a temporary file and replays
what was said through structlog: known chatter at debug, anything else as a warning. Use
:func:`quiet_stderr` around other calls that print the same way (the first device query).
The device actually chosen is logged once, as ``models.device_selected``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import structlog

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = structlog.get_logger(__name__)

#: What TensorFlow prints on a CPU-only machine on every start: not worth a user's attention.
_CHATTER = re.compile(
    r"absl::InitializeLog|cudart_stub|cuInit|cuda_(platform|dnn|fft|blas|diagnostics|executor)|"
    r"port\.cc|oneDNN|cpu_feature_guard|This TensorFlow binary is optimized|TF-TRT|"
    r"computation_placer|Unable to register cu(DNN|FFT|BLAS) factory|kernel driver does not appear|"
    r"retrieving CUDA diagnostic|rebuild TensorFlow with the appropriate compiler flags|"
    r"TensorFlow Lite XNNPACK delegate"
)
_lock = threading.Lock()
_module: ModuleType | None = None


def tensorflow() -> ModuleType:
    """The ``tensorflow`` module, imported (once) with its start-up chatter captured."""
    global _module
    with _lock:
        if _module is None:
            with quiet_stderr("import"):
                import keras  # noqa: F401 - imported here so its TF import is captured too
                import tensorflow as tf
            _module = tf
        return _module


@contextmanager
def quiet_stderr(during: str) -> Iterator[None]:
    """Capture what is written to descriptor 2 meanwhile; replay it through structlog."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            _replay(sink.read().decode("utf-8", "replace"), during)


def _replay(text: str, during: str) -> None:
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        if _CHATTER.search(line):
            log.debug("models.tensorflow_said", during=during, line=line)
        else:
            log.warning("models.tensorflow_said", during=during, line=line)
