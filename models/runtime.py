"""The inference runtime: the one module that runs TensorFlow for refocusd.

``load_classifier`` and ``load_reconstructor`` turn a model folder (see ``store``) into
objects implementing :class:`~refocusd.models.api.FocusClassifier` and
:class:`~refocusd.models.api.FrameReconstructor`. TensorFlow is imported on first load.

- Device: :func:`select_device` picks the GPU when there is one (memory growth on) unless
  ``cpu`` is asked for; all variables, traces and calls are pinned to that device.
- Classifier: one compiled ``tf.function`` per (pixel dtype, channel count), each with a
  fixed input signature ``[H?, W?, C]``. The raw frame (uint8/uint16/float32 as it came) is
  resized bilinearly to 134x134 *inside* the graph — the resize kernel reads the raw
  dtype, so a 2048x2048 uint16 frame is never converted to float as a whole — then
  standardised and run through the SDCNN (XLA-compiled on a CPU, batched on a GPU).
  Never ``model.predict`` (40 ms overhead per call).
- Reconstructor: frames are mapped to 0..255 (``preprocessing.to_network_range``), tiled
  (``tiling``: 92 px symmetric padding, overlapping tiles), run through a compiled call
  with a fixed input signature, and stitched with raised-cosine blending; the result has
  the input's shape, channels and dtype. Models built for 572 px use the paper's 388 px
  tiles; fully convolutional ones (what ``refocusd train`` writes) use, per frame size,
  the valid tile needing the fewest network pixels (``tiling.choose_tile``: a 1604 px
  frame takes 4 tiles of 836 instead of 25 of 388, ~1.6x less CPU time).
Both trace and run once at load (warm-up), so the first real frame is not slow.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contextlib  # noqa: E402
import platform  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any, Literal  # noqa: E402

import numpy as np  # noqa: E402
import structlog  # noqa: E402

from refocusd.models import store, tiling  # noqa: E402
from refocusd.models import crops as cropping  # noqa: E402
from refocusd.models.api import CropScore, DeviceInfo, ModelError, Verdict, valid_threshold  # noqa: E402
from refocusd.models.card import ModelCard  # noqa: E402
from refocusd.models.tf_import import quiet_stderr, tensorflow  # noqa: E402
from refocusd.models.preprocessing import (  # noqa: E402
    CLASSIFIER_INPUT_SIZE,
    as_hwc,
    from_network_range,
    to_network_range,
)

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

log = structlog.get_logger(__name__)

DevicePreference = Literal["auto", "cpu", "gpu"]
# Dtypes the compiled classifier takes as they are; others are converted to float32 first.
_NATIVE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_MAX_CLASSIFIER_BATCH = 32


def _tf() -> Any:  # Any: tensorflow ships no type information for its module object
    return tensorflow()


_device_lock = threading.Lock()


def configure_threads(intra_op: int | None) -> None:
    """Cap TensorFlow's per-operation thread pool (e.g. one per Dask worker thread).

    Must run before TensorFlow executes anything in this process; later it cannot change
    and a warning says so."""
    if intra_op is None:
        return
    tf = _tf()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as exc:
        log.warning("models.threads_unchanged", requested=intra_op, error=str(exc))


def select_device(pref: DevicePreference = "auto") -> DeviceInfo:
    """GPU if one is visible (memory growth on) unless ``pref == "cpu"``.

    ``pref == "gpu"`` without a visible GPU is a :class:`ModelError`.
    """
    if pref not in ("auto", "cpu", "gpu"):
        raise ModelError(f"device must be auto, cpu or gpu, not {pref!r}")
    tf = _tf()
    with _device_lock, quiet_stderr("device query"):  # cuInit complains on CPU-only machines
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            with contextlib.suppress(RuntimeError):  # initialised by an earlier load: growth was set then
                tf.config.experimental.set_memory_growth(gpu, True)
    if pref == "cpu":
        info = DeviceInfo("cpu", _cpu_name(), "cpu requested")
    elif gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = str(details.get("device_name", gpus[0].name))
        info = DeviceInfo("gpu", name, "gpu requested" if pref == "gpu" else "GPU visible")
    elif pref == "gpu":
        raise ModelError(
            "device 'gpu' was requested but TensorFlow sees no GPU (is the CUDA build of "
            "TensorFlow installed, `pip install refocusd[gpu]`, and a driver present?)"
        )
    else:
        info = DeviceInfo("cpu", _cpu_name(), "no GPU visible to TensorFlow")
    log.info("models.device_selected", device=info.kind, name=info.name, reason=info.reason)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def _mixed_copy(model: keras.Model, card: ModelCard, device: DeviceInfo) -> keras.Model:
    """The same weights in a network rebuilt under the ``mixed_float16`` policy (GPU only)."""
    if device.kind != "gpu":
        log.warning("models.mixed_precision_ignored", reason="needs a GPU", device=device.kind)
        return model
    import keras

    from refocusd.models.resunet import build_resunet
    from refocusd.models.sdcnn import build_sdcnn

    builders: dict[str, Callable[[], keras.Model]] = {
        "sdcnn": build_sdcnn,
        "resunet": lambda: build_resunet(card.base_filters or 64, card.input.size),
    }
    if card.architecture not in builders:
        log.warning("models.mixed_precision_ignored", reason="unknown architecture",
                    architecture=card.architecture)
        return model
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = builders[card.architecture]()
    finally:
        keras.config.set_dtype_policy(previous)
    try:
        mixed.set_weights(model.get_weights())
    except ValueError as exc:
        raise ModelError(f"cannot run {card.model_id} in mixed precision: {exc}") from exc
    return mixed


def _load(spec: str | Path, kind: Literal["classifier", "reconstructor"],
          device: DevicePreference, mixed_precision: bool) -> tuple[Any, ModelCard, Path, DeviceInfo]:
    folder = store.resolve(spec, kind)
    card = store.load_card(folder)
    info = select_device(device)
    tf = _tf()
    with tf.device(info.tf_device):
        model = store.load_keras(folder, card)
        if mixed_precision:
            model = _mixed_copy(model, card, info)
    return model, card, folder, info


# --------------------------------------------------------------------------- classifier


class _LoadedModel:
    """What both runtimes expose about the model they run."""

    _card: ModelCard
    _device: DeviceInfo

    @property
    def model_id(self) -> str:
        return self._card.model_id

    @property
    def card(self) -> ModelCard:
        return self._card

    @property
    def device(self) -> DeviceInfo:
        return self._device


class Classifier(_LoadedModel):
    """Focused/defocused verdicts for whole frames (any size, mono/RGB, 8/16-bit, float).

    On a CPU the network part is XLA-compiled for one frame (``jit_compile``; measured on
    the 2-core AVX2 machines: 29 ms of CPU per frame against 42 ms through TensorFlow's
    default oneDNN kernels) and batches run frame by frame, since a CPU gains nothing from
    stacking them. On a GPU the network is batched (up to 32 frames per call).
    """

    def __init__(self, model: keras.Model, card: ModelCard, device: DeviceInfo,
                 threshold: float = 0.5, *, xla: bool | None = None) -> None:
        _check_io(model, card, (None, CLASSIFIER_INPUT_SIZE, CLASSIFIER_INPUT_SIZE, 3), (None, 2))
        self._tf = _tf()
        self._model = model
        self._card = card
        self._device = device
        self._threshold = valid_threshold(threshold)
        self._xla = device.kind == "cpu" if xla is None else xla
        self._build()
        try:
            self._warm_up()
        except self._tf.errors.OpError as exc:
            if not self._xla:
                raise
            # An XLA build that cannot compile this graph: the plain graph is still correct.
            log.warning("models.xla_unavailable", error=f"{type(exc).__name__}: {exc}")
            self._xla = False
            self._build()
            self._warm_up()

    def _build(self) -> None:
        tf = self._tf
        side = CLASSIFIER_INPUT_SIZE
        self._single: dict[tuple[str, int], Any] = {}
        self._prepare: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()  # the daemon may classify from several threads
        with tf.device(self._device.tf_device):
            self._net = tf.function(
                lambda x: self._model(x, training=False)[:, 0],
                input_signature=[tf.TensorSpec([1 if self._xla else None, side, side, 3],
                                               tf.float32)],
                jit_compile=self._xla,
            )

    # The compiled graphs ---------------------------------------------------------------

    def _preprocess_graph(self, frame: tf.Tensor, channels: int) -> tf.Tensor:
        """(H, W, C) raw frame -> (1, 134, 134, 3) standardised float32."""
        tf = self._tf
        size = (CLASSIFIER_INPUT_SIZE, CLASSIFIER_INPUT_SIZE)
        x = tf.image.resize(frame[None], size, method="bilinear")  # raw dtype in, float32 out
        if channels == 1:
            x = tf.tile(x, [1, 1, 1, 3])
        return tf.image.per_image_standardization(x)

    def _functions(self, key: tuple[str, int]) -> tuple[Any, Any]:
        """(frame -> p_focused, frame -> network input) compiled for one dtype/channels."""
        with self._lock:
            if key not in self._single:
                self._compile(key)
        return self._single[key], self._prepare[key]

    def _compile(self, key: tuple[str, int]) -> None:
        tf = self._tf
        dtype, channels = key
        spec = [tf.TensorSpec([None, None, channels], tf.as_dtype(np.dtype(dtype)))]
        with tf.device(self._device.tf_device):
            self._single[key] = tf.function(
                lambda f: self._net(self._preprocess_graph(f, channels))[0],
                input_signature=spec,
            )
            self._prepare[key] = tf.function(
                lambda f: self._preprocess_graph(f, channels)[0], input_signature=spec
            )

    def _warm_up(self) -> None:
        started = time.perf_counter()
        for dtype in ("uint8", "uint16"):
            for channels in (1, 3):
                self.classify(np.zeros((64, 64, channels), dtype=dtype))
        self.classify_batch([np.zeros((64, 64), np.uint16)] * 2)
        log.info("models.warmed_up", model=self.model_id, kind="classifier", xla=self._xla,
                 seconds=round(time.perf_counter() - started, 3))

    # Public API ------------------------------------------------------------------------

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """The network input for one frame, ``(134, 134, 3)`` float32 (as classified)."""
        frame = _classifier_frame(pixels)
        _, prepare = self._functions((frame.dtype.str, frame.shape[2]))
        with self._tf.device(self._device.tf_device):
            return prepare(frame).numpy()

    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = valid_threshold(value)

    def classify(self, pixels: np.ndarray, *, pixel_size_um: float | None = None) -> Verdict:
        started = time.perf_counter()
        frame = _classifier_frame(pixels)
        single, _ = self._functions((frame.dtype.str, frame.shape[2]))
        with self._tf.device(self._device.tf_device):
            p = float(single(frame))
        return self._verdict(p, time.perf_counter() - started)

    def classify_batch(
        self, frames: Sequence[np.ndarray], *, pixel_sizes: Sequence[float | None] | None = None
    ) -> list[Verdict]:
        """Verdicts for several frames (sizes and dtypes may differ)."""
        if not frames:
            return []
        started = time.perf_counter()
        tf = self._tf
        probabilities: list[float] = []
        with tf.device(self._device.tf_device):
            if self._xla:
                for pixels in frames:
                    frame = _classifier_frame(pixels)
                    single, _ = self._functions((frame.dtype.str, frame.shape[2]))
                    probabilities.append(float(single(frame)))
            else:
                for start in range(0, len(frames), _MAX_CLASSIFIER_BATCH):
                    inputs = []
                    for pixels in frames[start : start + _MAX_CLASSIFIER_BATCH]:
                        frame = _classifier_frame(pixels)
                        _, prepare = self._functions((frame.dtype.str, frame.shape[2]))
                        inputs.append(prepare(frame))
                    probabilities.extend(self._net(tf.stack(inputs)).numpy().tolist())
        latency = (time.perf_counter() - started) / len(frames)
        return [self._verdict(p, latency) for p in probabilities]

    def _verdict(self, p: float, latency: float) -> Verdict:
        label = "focused" if p >= self.threshold else "defocused"
        return Verdict(p_focused=p, label=label, model_id=self.model_id, latency_s=latency)


def _classifier_frame(pixels: np.ndarray) -> np.ndarray:
    frame = as_hwc(pixels)
    if frame.dtype not in _NATIVE_DTYPES:
        frame = frame.astype(np.float32)
    return frame


def _check_io(model: keras.Model, card: ModelCard, inputs: tuple[int | None, ...],
              outputs: tuple[int | None, ...]) -> None:
    got_in, got_out = tuple(model.input_shape), tuple(model.output_shape)
    if len(got_in) != len(inputs) or any(
        want is not None and got not in (None, want) for got, want in zip(got_in, inputs)
    ) or got_out[-1] != outputs[-1]:
        raise ModelError(
            f"{card.model_id} takes {got_in} and gives {got_out}; a {card.kind} must take "
            f"{inputs} and give {outputs}"
        )


DEFAULT_CROPS = 8
_MAX_CROP_BATCH = 256


class CropClassifier(_LoadedModel):
    """Verdicts from K content-chosen crops at the trained sampling (any frame size).

    Per frame: crop geometry from the frame's pixel size and the card's trained sampling
    (native pixels when the pixel size is unknown: logged once, recorded as
    ``pixel_size_um=None`` in the verdict), K crops chosen and resampled in numpy/OpenCV
    (:mod:`refocusd.models.crops`), one network call for all crops (of all frames, in
    ``classify_batch``), mean logit over the crops, and the inverse-variance weighted
    signed defocus. On a CPU the network runs through TensorFlow Lite with its XNNPACK
    delegate (converted from the same weights at load: about 3x faster than TensorFlow
    for these small batches; XLA made the depthwise convolutions 10x slower); frames
    smaller than one crop, GPUs, and a failed conversion use a plain ``tf.function``.
    """

    def __init__(self, model: keras.Model, card: ModelCard, device: DeviceInfo,
                 threshold: float = 0.5, *, crops: int | None = None, lite: bool = True) -> None:
        self._threshold = valid_threshold(threshold)
        if card.input.size is None or card.input.pixel_size_um is None:
            raise ModelError(f"{card.model_id}: a crop classifier's card needs input.size "
                             "and input.pixel_size_um")
        _check_io(model, card, (None, None, None, 1), (None, cropping.OUTPUTS))
        self._tf = tf = _tf()
        self._model = model
        self._card = card
        self._device = device
        self.crops = int(crops or card.input.crops or DEFAULT_CROPS)
        if self.crops < 1:
            raise ValueError(f"crops must be >= 1, got {self.crops}")
        self.input_size = int(card.input.size)
        self.trained_pixel_um = float(card.input.pixel_size_um)
        self._warned_native = False
        self._warn_lock = threading.Lock()
        with tf.device(device.tf_device):
            self._fn = tf.function(
                lambda x: self._model(x, training=False),
                input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)],
            )
        started = time.perf_counter()
        self._lite: _LiteRunner | None = None
        if device.kind == "cpu" and lite:
            try:
                self._lite = _LiteRunner(model, self.input_size)
            except Exception as exc:  # noqa: BLE001 - any converter failure: TensorFlow still works
                log.warning("models.tflite_unavailable", error=f"{type(exc).__name__}: {exc}")
        self.classify(np.zeros((64, 64), np.uint16), pixel_size_um=self.trained_pixel_um)
        self.classify(np.zeros((self.input_size * 2,) * 2, np.uint8),
                      pixel_size_um=self.trained_pixel_um)
        log.info("models.warmed_up", model=self.model_id, kind="classifier", crops=self.crops,
                 trained_pixel_um=self.trained_pixel_um, engine=self.engine,
                 seconds=round(time.perf_counter() - started, 3))

    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = valid_threshold(value)

    @property
    def engine(self) -> str:
        return "tflite-xnnpack" if self._lite is not None else "tensorflow"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._lite is not None and batch.shape[1] == self.input_size:
            return self._lite(batch)
        with self._tf.device(self._device.tf_device):
            return self._fn(batch).numpy()

    def _known(self, pixel_size_um: float | None) -> float | None:
        if pixel_size_um is not None:
            return float(pixel_size_um)
        with self._warn_lock:
            if not self._warned_native:
                self._warned_native = True
                log.warning(
                    "models.pixel_size_unknown", model=self.model_id,
                    trained_pixel_um=self.trained_pixel_um,
                    detail="frames without a pixel size are classified in native pixels; "
                    "set [models] pixel_size_um or pass --pixel-size-um",
                )
        return None

    def prepare(self, pixels: np.ndarray, pixel_size_um: float | None = None
                ) -> tuple[np.ndarray, list[tuple[int, int]], cropping.CropGeometry]:
        """The network input for one frame: ``(k, S, S, 1)`` crops, their corners, geometry."""
        frame = as_hwc(pixels)
        image = frame[:, :, 0] if frame.shape[2] == 1 else frame
        geometry = cropping.crop_geometry(
            image.shape, input_size=self.input_size, trained_pixel_um=self.trained_pixel_um,
            pixel_size_um=pixel_size_um,
        )
        corners = cropping.select_crops(image, geometry.native, self.crops)
        return cropping.extract_crops(image, corners, geometry), corners, geometry

    def classify(self, pixels: np.ndarray, *, pixel_size_um: float | None = None) -> Verdict:
        started = time.perf_counter()
        known = self._known(pixel_size_um)
        batch, corners, geometry = self.prepare(pixels, known)
        out = self._run(batch)
        return self._verdict(out, corners, geometry, time.perf_counter() - started)

    def classify_batch(
        self, frames: Sequence[np.ndarray], *, pixel_sizes: Sequence[float | None] | None = None
    ) -> list[Verdict]:
        """Verdicts for several frames; all their crops go through the network together."""
        if not frames:
            return []
        sizes = list(pixel_sizes) if pixel_sizes is not None else [None] * len(frames)
        if len(sizes) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(sizes)} pixel sizes")
        started = time.perf_counter()
        prepared = [self.prepare(f, self._known(s)) for f, s in zip(frames, sizes, strict=True)]
        outputs: list[np.ndarray] = []
        pending: list[np.ndarray] = []

        def flush() -> None:
            if pending:
                outputs.extend(np.split(self._run(np.concatenate(pending)),
                                        np.cumsum([len(b) for b in pending])[:-1]))
                pending.clear()

        for batch, _, _ in prepared:  # same-sized crops share a call (one sampling per run)
            if pending and (batch.shape[1:] != pending[0].shape[1:]
                            or sum(len(b) for b in pending) + len(batch) > _MAX_CROP_BATCH):
                flush()
            pending.append(batch)
        flush()
        latency = (time.perf_counter() - started) / len(frames)
        return [self._verdict(out, corners, geometry, latency)
                for out, (_, corners, geometry) in zip(outputs, prepared, strict=True)]

    def _verdict(self, out: np.ndarray, corners: list[tuple[int, int]],
                 geometry: cropping.CropGeometry, latency: float) -> Verdict:
        agg = cropping.aggregate(out[:, 0], out[:, 1], out[:, 2])
        p = agg.p_focused
        per_crop = cropping.crop_probabilities(out[:, 0])
        scores = tuple(
            CropScore(y=y, x=x, size=geometry.native, p_focused=float(pc),
                      defocus_um=float(mu) * cropping.DEFOCUS_SCALE_UM)
            for (y, x), pc, mu in zip(corners, per_crop, out[:, 1], strict=True)
        )
        return Verdict(
            p_focused=p, label="focused" if p >= self.threshold else "defocused",
            model_id=self.model_id, latency_s=latency, defocus_um=agg.defocus_um,
            defocus_sigma_um=agg.defocus_sigma_um, pixel_size_um=geometry.pixel_size_um,
            crops=scores,
        )


class _LiteRunner:
    """The crop network as a TensorFlow Lite interpreter (XNNPACK), one per batch size.

    Interpreters are not thread-safe: calls are serialised (they take about a millisecond).
    """

    def __init__(self, model: keras.Model, side: int) -> None:
        import contextlib as _contextlib
        import io
        import warnings

        import keras

        tf = _tf()
        # A fixed-size view of the same layers (a concrete function with a dynamic batch
        # converted to a graph giving NaN under XNNPACK; this path matches TensorFlow).
        crop = keras.Input((side, side, 1))
        fixed = keras.Model(crop, model(crop))
        converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
        with _contextlib.redirect_stdout(io.StringIO()):  # the converter prints to stdout
            self._flatbuffer = converter.convert()
        self._side = side
        # One thread: measured faster than two on the shared 2-core CPU (XNNPACK's workers
        # spin against the daemon's other threads), and the verdict needs no more.
        self._threads = 1
        self._interpreters: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._warnings = warnings
        self(np.zeros((1, side, side, 1), np.float32))

    def _interpreter(self, n: int) -> Any:
        interpreter = self._interpreters.get(n)
        if interpreter is None:
            from refocusd.models.tf_import import quiet_stderr

            # TFLite's C++ layer announces its XNNPACK delegate on descriptor 2: keep it off
            # the user's terminal (replayed through structlog at debug).
            with self._warnings.catch_warnings(), quiet_stderr("tflite"):
                self._warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated"
                interpreter = _tf().lite.Interpreter(model_content=self._flatbuffer,
                                                     num_threads=self._threads)
                interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"],
                                                [n, self._side, self._side, 1])
                interpreter.allocate_tensors()
            self._interpreters[n] = interpreter
        return interpreter

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            interpreter = self._interpreter(len(batch))
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"],
                                   np.ascontiguousarray(batch, np.float32))
            interpreter.invoke()
            return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def load_classifier(
    spec: str | Path = "default",
    *,
    device: DevicePreference = "auto",
    threshold: float = 0.5,
    mixed_precision: bool = False,
    crops: int | None = None,
) -> Classifier | CropClassifier:
    """Load, verify and warm up a classifier (``spec``: "default", a folder or a .keras).

    Crop networks (``focusnet``, ``sdcnn-crops``) get a :class:`CropClassifier` with
    ``crops`` crops per frame (default: the card's); the paper's whole-frame SDCNN keeps
    :class:`Classifier`."""
    model, card, _, info = _load(spec, "classifier", device, mixed_precision)
    if card.input.pixel_size_um is not None:
        return CropClassifier(model, card, info, threshold, crops=crops)
    return Classifier(model, card, info, threshold)


# ------------------------------------------------------------------------ reconstructor


class Reconstructor(_LoadedModel):
    """Defocused frame in, reconstructed frame out (same shape, channels and dtype)."""

    def __init__(self, model: keras.Model, card: ModelCard, device: DeviceInfo, *,
                 tile: int | None = None, overlap: int = tiling.DEFAULT_OVERLAP,
                 batch_size: int | None = None) -> None:
        _check_io(model, card, (None, None, None, 3), (None, None, None, 3))
        fixed = model.input_shape[1]
        if fixed is not None:
            if tile is not None and tile + 2 * tiling.MARGIN != fixed:
                raise ModelError(
                    f"{card.model_id} was built for {fixed} px windows; tile {tile} needs "
                    f"{tile + 2 * tiling.MARGIN}"
                )
            tile = fixed - 2 * tiling.MARGIN
        if tile is not None and not tiling.is_valid_input_size(tile + 2 * tiling.MARGIN):
            raise ValueError(
                f"tile {tile} is not valid: tile + 184 must be a valid ResUNet input "
                f"(tiles 4, 20, ..., 388, 404, ...: 4 more than a multiple of 16)"
            )
        smallest = tile or tiling.PAPER_OUTPUT_SIZE
        if not 0 <= overlap < smallest // 2:
            raise ValueError(f"overlap must be in [0, {smallest // 2}), got {overlap}")
        self._tf = tf = _tf()
        self._model = model
        self._card = card
        self._device = device
        self.tile = tile  # None: chosen per frame size (fully convolutional models only)
        self.overlap = overlap
        self._batch_size = batch_size
        window = None if fixed is None else fixed
        with tf.device(device.tf_device):
            self._fn = tf.function(
                lambda x: self._model(x, training=False),
                input_signature=[tf.TensorSpec([None, window, window, 3], tf.float32)],
            )
        started = time.perf_counter()
        self._run(np.zeros((1, smallest + 2 * tiling.MARGIN, smallest + 2 * tiling.MARGIN, 3),
                           np.float32))
        log.info("models.warmed_up", model=self.model_id, kind="reconstructor",
                 seconds=round(time.perf_counter() - started, 3))

    def tile_for(self, height: int, width: int) -> int:
        """The output tile used for a ``height x width`` frame."""
        if self.tile is not None:
            return self.tile
        return tiling.choose_tile(height, width, overlap=self.overlap)

    def batch_size_for(self, tile: int) -> int:
        """Tiles per network call: 1 on a CPU (batching does not speed up a CPU), more on
        a GPU, fewer for bigger tiles (about eight 572 px windows' worth of memory)."""
        if self._batch_size:
            return self._batch_size
        if self._device.kind != "gpu":
            return 1
        window = tile + 2 * tiling.MARGIN
        return max(1, (8 * tiling.PAPER_INPUT_SIZE**2) // window**2)

    @property
    def threads(self) -> int:
        """One frame at a time: the network already uses every core (or the GPU)."""
        return 1

    def close(self) -> None:
        """Nothing to release: the model lives as long as the process."""

    def parameters_for(self, height: int, width: int) -> dict[str, object]:
        """The tiling a ``height x width`` frame gets (recorded in provenance)."""
        tile = self.tile_for(height, width)
        return {"tile": tile, "overlap": self.overlap, "batch_size": self.batch_size_for(tile)}

    @property
    def provenance(self) -> dict[str, object]:
        return {
            **self._card.identity(),
            "tile": self.tile if self.tile is not None else "auto",
            "tile_rule": (
                "fixed by the model" if self.tile is not None else
                f"fewest window pixels among tiles {tiling.PAPER_OUTPUT_SIZE}.."
                f"{tiling.MAX_AUTO_TILE} (refocusd.models.tiling.choose_tile)"
            ),
            "overlap": self.overlap,
            "padding": f"{tiling.MARGIN} px symmetric",
            "blending": "raised cosine",
            "intensity": "uint8 as is; [0,1] floats x255; else 0.05-99.95 percentiles -> 0..255",
            "device": self._device.describe(),
        }

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self._tf.device(self._device.tf_device):
            return self._fn(batch).numpy()

    def reconstruct(self, pixels: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        net_in, imap = to_network_range(pixels)
        tile = self.tile_for(net_in.shape[0], net_in.shape[1])
        out = tiling.apply_tiled(
            net_in, self._run, tile=tile, overlap=self.overlap,
            batch_size=self.batch_size_for(tile),
        )
        result = from_network_range(out, imap)
        log.debug("models.reconstructed", model=self.model_id, shape=list(result.shape),
                  tile=tile, seconds=round(time.perf_counter() - started, 3))
        return result


def load_reconstructor(
    spec: str | Path = "default",
    *,
    device: DevicePreference = "auto",
    mixed_precision: bool = False,
    tile_overlap: int = tiling.DEFAULT_OVERLAP,
    tile: int | None = None,
    batch_size: int | None = None,
) -> Reconstructor:
    """Load, verify and warm up a reconstructor.

    ``tile`` (output pixels per tile) applies to fully convolutional models; ``None`` picks,
    per frame size, the valid tile between 388 and ``tiling.MAX_AUTO_TILE`` that needs the
    fewest network pixels (``tiling.choose_tile``). Models built for a fixed window (the
    paper's 572) always use their own tile (388). ``batch_size``: tiles per call (default
    1 on a CPU, up to 8 on a GPU)."""
    model, card, _, info = _load(spec, "reconstructor", device, mixed_precision)
    return Reconstructor(model, card, info, tile=tile, overlap=tile_overlap, batch_size=batch_size)


__all__ = [
    "Classifier",
    "CropClassifier",
    "DeviceInfo",
    "Reconstructor",
    "as_hwc",
    "load_classifier",
    "load_reconstructor",
    "select_device",
]
