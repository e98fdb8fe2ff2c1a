"""The inference engine: complete studies in, calibrated and explained results out.

Create one :class:`InferenceEngine` per process at start-up (it loads and checks
the model folder, raising :class:`~node.errors.ModelError` early), then hand it
studies::

    engine = InferenceEngine.load(Path("models/demo"), settings.inference)
    results = engine.infer_studies([StudyInput(uid, (ImageInput(path, sop_uid), ...))])

Images of all the studies passed together are batched (``inference.batch_size``),
so a worker can batch across queued studies. :meth:`InferenceEngine.infer_studies`
raises :class:`StudyInferenceError` (an :class:`~node.errors.InferenceError`
carrying the study UID) for the first study that fails;
:meth:`InferenceEngine.infer_each` returns the error in that study's place and
still infers the others.

A problem with one image fails only its own study, the reason naming the image: any
error reading, decoding or preprocessing it (:func:`prepare_image` returns it rather
than raising), a forward pass that fails for a batch (each image is then passed alone),
a decoding process that dies (:mod:`node.inference.decoders` replaces it and decodes
again).

Per image: each member sees each TTA view; its temperature-calibrated
probabilities are averaged over views, then over members with the card's
weights (:mod:`node.inference.ensemble`). Grad-CAM for the malignant class comes
from the identity view's forward pass (:mod:`node.inference.explain`).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import structlog
import torch

from node.config import InferenceSettings
from node.errors import InferenceError
from node.imaging.dataset import read_dataset
from node.imaging.geometry import Geometry
from node.imaging.limits import check_image_size
from node.imaging.preprocess import Preprocessed, PreprocessOptions, preprocess_dataset
from node.inference import ensemble
from node.inference.decoders import DecoderPool, DecoderState
from node.inference.explain import combine_cams, extract_regions, grad_cam
from node.inference.runtime import PreparedMember, Runtime, prepare_member
from node.models.card import ModelCard
from node.models.folder import LoadedModel, load_model_folder
from node.results import BreastResult, ImageResult, Region, StageTimings, StudyResult

__all__ = [
    "ImageInput",
    "InferenceEngine",
    "PreparedStudies",
    "StudyInferenceError",
    "StudyInput",
    "prepare_image",
]

log = structlog.get_logger(__name__)


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class ImageInput:
    """One stored DICOM image of a study."""

    path: Path
    sop_instance_uid: str


@dataclass(frozen=True)
class StudyInput:
    """A complete study: the images to infer together."""

    study_uid: str
    images: tuple[ImageInput, ...]


class StudyInferenceError(InferenceError):
    """A study could not be inferred; ``study_uid`` says which, ``str(exc)`` why."""

    def __init__(self, study_uid: str, reason: str) -> None:
        self.study_uid = study_uid
        self.reason = reason
        super().__init__(reason)


# --------------------------------------------------------------------------- #
# Engine
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Prepared:
    study_index: int
    sop_instance_uid: str
    image: Preprocessed
    seconds: float


@dataclass(frozen=True)
class PreparedStudies:
    """Studies whose images are decoded and preprocessed, ready for the model."""

    studies: tuple[StudyInput, ...]
    images: tuple[_Prepared, ...]
    errors: Mapping[int, StudyInferenceError]
    """Studies (by index) that already failed to read or preprocess."""


_ImageOutput = tuple[npt.NDArray[np.float64], npt.NDArray[np.float32] | None, StageTimings]
"""One image's member probabilities ``(M, C)``, Grad-CAM map and timings."""


@dataclass(frozen=True)
class _BatchOutput:
    member_probabilities: npt.NDArray[np.float64]  # (M, N, C)
    heatmaps: npt.NDArray[np.float32] | None  # (N, H, W)
    inference_s: float
    cam_s: float


class InferenceEngine:
    """A loaded model ready to infer studies. Create it once per process with :meth:`load`."""

    def __init__(
        self,
        model: LoadedModel,
        settings: InferenceSettings,
        runtime: Runtime,
        *,
        display_size: int | None = None,
    ) -> None:
        card = model.card
        self.display_size = display_size
        self._pool: DecoderPool[Preprocessed] | None = None
        self._pool_lock = threading.Lock()
        self.card: ModelCard = card
        self.folder: Path = model.folder
        self.settings = settings
        self.runtime = runtime
        self.operating_point = card.operating_point(settings.operating_point)
        self.tta: Literal["none", "flip", "multi"] = (
            card.ensemble.tta if settings.tta == "card" else settings.tta
        )
        self.views = ensemble.tta_views(self.tta, settings.tta_views)
        self._members: tuple[PreparedMember, ...] = tuple(
            prepare_member(member.model, runtime) for member in model.members
        )
        self._specs = tuple(member.spec for member in model.members)
        self._weights = tuple(spec.weight for spec in self._specs)
        self._options = card.input.preprocess_options()
        channels = card.input.channels
        self._mean = torch.tensor(card.input.mean, device=runtime.device).view(1, channels, 1, 1)
        self._std = torch.tensor(card.input.std, device=runtime.device).view(1, channels, 1, 1)

    @classmethod
    def load(
        cls, model_dir: Path, settings: InferenceSettings, *, display_size: int | None = None
    ) -> InferenceEngine:
        """Load and check ``model_dir``; :class:`ModelError` for any problem, before any study.

        ``display_size``: keep each image's display copy (:attr:`ImageResult.display`)
        with this longest side (0: original size), for result pictures; ``None``: none.
        """
        runtime = Runtime.from_settings(settings)
        model = load_model_folder(Path(model_dir))
        engine = cls(model, settings, runtime, display_size=display_size)
        card = model.card
        used = {"tta": engine.tta, "breast_aggregation": settings.breast_aggregation}
        differs = {
            key: {"card": getattr(card.ensemble, key), "settings": value}
            for key, value in used.items()
            if getattr(card.ensemble, key) != value
        }
        if differs:
            log.warning(
                "model.settings_differ",
                model=card.name,
                differences=differs,
                consequence="the card's operating points were measured with its own choices",
            )
        if runtime.device.type == "cuda" or runtime.compile:
            engine.warm_up()
        log.info(
            "inference.ready",
            model=card.name,
            version=card.version,
            device=str(runtime.device),
            precision=runtime.precision,
            members=len(engine._members),
            tta=[v.name for v in engine.views],
            operating_point=engine.operating_point.name,
        )
        return engine

    def warm_up(self) -> float:
        """One forward pass (with Grad-CAM) of a blank batch: compiles, autotunes and
        allocates before the first study rather than during it. Returns the seconds taken."""
        start = time.perf_counter()
        opts = self._options
        blank = np.zeros((opts.height, opts.width), dtype=np.float32)
        geometry = Geometry(
            original_shape=(opts.height, opts.width),
            crop=(0, 0, opts.height, opts.width),
            flipped=False,
            resized_shape=(opts.height, opts.width),
            pad=(0, 0),
            input_shape=(opts.height, opts.width),
        )
        image = Preprocessed(
            image=blank,
            geometry=geometry,
            modality="MG",
            laterality="L",
            laterality_source="ImageLaterality",
            view="CC",
        )
        self._forward([image] * self.settings.batch_size)
        self.runtime.synchronize()
        seconds = time.perf_counter() - start
        log.info("inference.warmed_up", seconds=round(seconds, 3))
        return seconds

    # ----------------------------------------------------------------- public
    def infer_studies(self, studies: Sequence[StudyInput]) -> list[StudyResult]:
        """Infer studies together; raise :class:`StudyInferenceError` for the first that fails."""
        results: list[StudyResult] = []
        for outcome in self.infer_each(studies):
            if isinstance(outcome, InferenceError):
                raise outcome
            results.append(outcome)
        return results

    def infer_each(self, studies: Sequence[StudyInput]) -> list[StudyResult | StudyInferenceError]:
        """Infer studies together; a failed study's place holds its :class:`StudyInferenceError`."""
        return self.infer_prepared(self.prepare(studies))

    def prepare(self, studies: Sequence[StudyInput]) -> PreparedStudies:
        """Read, decode and preprocess every image (CPU work only; no model runs).

        Safe to call from another thread while :meth:`infer_prepared` runs, which is how a
        worker overlaps decoding the next studies with inferring the current ones. With
        ``inference.decode_processes`` the images are decoded by that many processes at
        once (the JPEG 2000 and JPEG decoders hold Python's lock, so threads cannot).
        """
        errors: dict[int, StudyInferenceError] = {}
        jobs: list[tuple[int, ImageInput]] = []
        for index, study in enumerate(studies):
            if not study.images:
                errors[index] = StudyInferenceError(study.study_uid, "the study has no images")
            jobs.extend((index, image) for image in study.images)
        outcomes = self._decode([image.path for _, image in jobs])
        prepared: list[_Prepared] = []
        for (index, image), (outcome, seconds) in zip(jobs, outcomes, strict=True):
            if index in errors:
                continue
            if isinstance(outcome, InferenceError):
                problem = str(outcome)
            elif outcome.modality not in self.card.modalities:
                problem = (
                    f"modality {outcome.modality} is not one the model {self.card.name} "
                    f"accepts ({', '.join(self.card.modalities)})"
                )
            else:
                prepared.append(_Prepared(index, image.sop_instance_uid, outcome, seconds))
                continue
            reason = f"image {image.sop_instance_uid}: {problem}"
            errors[index] = StudyInferenceError(studies[index].study_uid, reason)
        kept = tuple(p for p in prepared if p.study_index not in errors)
        return PreparedStudies(tuple(studies), kept, errors)

    @property
    def _prepare_image(self) -> functools.partial[tuple[Preprocessed | InferenceError, float]]:
        return functools.partial(
            prepare_image,
            options=self._options,
            display_size=self.display_size,
            max_image_bytes=self.settings.max_image_bytes,
        )

    def _decode(self, paths: Sequence[Path]) -> list[tuple[Preprocessed | InferenceError, float]]:
        """:func:`prepare_image` on every path: here, or in the decoding processes."""
        pool = self._decoder_pool()
        if pool is None:
            return [self._prepare_image(path) for path in paths]
        return pool.run(paths)

    def _decoder_pool(self) -> DecoderPool[Preprocessed] | None:
        """The decoding processes, or ``None`` to decode here."""
        count = self.settings.decode_processes
        if count == 0:
            return None
        with self._pool_lock:
            if self._pool is None:
                self._pool = DecoderPool(count, self._prepare_image, _decoder_process_init)
            return self._pool

    def decoder_state(self) -> DecoderState | None:
        """Whether the decoding processes are alive; ``None`` when images are decoded here."""
        count = self.settings.decode_processes
        with self._pool_lock:
            pool = self._pool
        if count == 0:
            return None
        if pool is None:
            return DecoderState(True, f"{count} process(es), started on first use")
        return pool.state()

    def close(self) -> None:
        """Stop the decoding processes, if any were started."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def infer_prepared(
        self, prepared_studies: PreparedStudies
    ) -> list[StudyResult | StudyInferenceError]:
        """Run the ensemble on studies made ready by :meth:`prepare`."""
        studies = prepared_studies.studies
        prepared = prepared_studies.images
        errors = dict(prepared_studies.errors)
        outputs: dict[int, _ImageOutput] = {}
        size = self.settings.batch_size
        for start in range(0, len(prepared), size):
            batch = prepared[start : start + size]
            for offset, item, outcome in self._forward_each(batch):
                if isinstance(outcome, str):
                    errors.setdefault(
                        item.study_index,
                        StudyInferenceError(
                            studies[item.study_index].study_uid,
                            f"image {item.sop_instance_uid}: {outcome}",
                        ),
                    )
                else:
                    outputs[start + offset] = outcome

        results: list[StudyResult | StudyInferenceError] = []
        for index, study in enumerate(studies):
            if index in errors:
                log.warning(
                    "inference.failed", study_uid=study.study_uid, reason=str(errors[index])
                )
                results.append(errors[index])
                continue
            items = [(i, p) for i, p in enumerate(prepared) if p.study_index == index]
            try:
                images = tuple(self._image_result(p, *outputs[i]) for i, p in items)
                result = self._study_result(study.study_uid, images)
            except Exception as exc:  # this study only; its neighbours keep their results
                log.exception("inference.result_failed", study_uid=study.study_uid)
                error = StudyInferenceError(
                    study.study_uid,
                    f"internal error combining results: {type(exc).__name__}: {exc}",
                )
                results.append(error)
                continue
            log.info(
                "inference.done",
                study_uid=study.study_uid,
                images=len(images),
                score=round(result.score, 4),
                positive=result.positive,
                category=result.assessment_category,
                **result.timings.to_dict(),
            )
            results.append(result)
        return results

    # ---------------------------------------------------------------- helpers
    def _forward_each(
        self, batch: Sequence[_Prepared]
    ) -> list[tuple[int, _Prepared, _ImageOutput | str]]:
        """Each image's model output, or why it failed.

        One forward pass for the whole batch; when it fails, each image is passed
        alone, so that an image the model cannot take fails only its own study.
        """
        try:
            out = self._forward([p.image for p in batch])
        except (RuntimeError, ValueError) as exc:
            if len(batch) == 1:
                return [(0, batch[0], _runtime_reason(exc))]
            log.warning("inference.batch_failed", images=len(batch), reason=_runtime_reason(exc))
            return [
                (offset, item, outcome)
                for offset, item in enumerate(batch)
                for _, _, outcome in self._forward_each([item])
            ]
        outputs: list[tuple[int, _Prepared, _ImageOutput | str]] = []
        for offset, item in enumerate(batch):
            timings = StageTimings(
                item.seconds, out.inference_s / len(batch), out.cam_s / len(batch)
            )
            heatmap = None if out.heatmaps is None else out.heatmaps[offset]
            outputs.append((offset, item, (out.member_probabilities[:, offset], heatmap, timings)))
        return outputs

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        channels = self.card.input.channels
        x = batch.expand(-1, channels, -1, -1) if channels != batch.shape[1] else batch
        x = (x - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last) if self.runtime.channels_last else x

    def _forward(self, images: Sequence[Preprocessed]) -> _BatchOutput:
        """Every member and view on one batch: probabilities ``(M, N, C)`` and CAM maps."""
        runtime = self.runtime
        x = torch.from_numpy(np.stack([p.image for p in images]))[:, None].to(runtime.device)
        malignant = self.card.malignant_index
        member_probs = np.zeros((len(self._members), len(images), len(self.card.labels)))
        cams: list[torch.Tensor] = []
        inference_s = cam_s = 0.0
        for m, (member, spec) in enumerate(zip(self._members, self._specs, strict=True)):
            view_probs = []
            for view in self.views:
                want_cam = self.settings.cam and view.is_identity
                start = time.perf_counter()
                inputs = self._normalise(ensemble.apply_view(x, view))
                if want_cam:
                    with torch.no_grad(), runtime.autocast():
                        features = member.features(inputs)
                    features = features.detach().requires_grad_(True)
                    with torch.enable_grad(), runtime.autocast():
                        logits = member.head(features)
                else:
                    with torch.inference_mode(), runtime.autocast():
                        logits = member.head(member.features(inputs))
                view_probs.append(ensemble.calibrated_probabilities(logits, spec.temperature))
                inference_s += time.perf_counter() - start
                if want_cam:
                    start = time.perf_counter()
                    cams.append(grad_cam(features, logits[:, malignant]))
                    runtime.synchronize()
                    cam_s += time.perf_counter() - start
            member_probs[m] = np.mean(view_probs, axis=0)
        heatmaps = None
        if cams:
            start = time.perf_counter()
            valid = [
                (g.pad[0], g.pad[1], g.pad[0] + g.resized_shape[0], g.pad[1] + g.resized_shape[1])
                for g in (p.geometry for p in images)
            ]
            heatmaps = combine_cams(
                cams, self._weights, (self._options.height, self._options.width), valid
            )
            cam_s += time.perf_counter() - start
        return _BatchOutput(member_probs, heatmaps, inference_s, cam_s)

    def _image_result(
        self,
        item: _Prepared,
        member_probs: npt.NDArray[np.float64],
        heatmap: npt.NDArray[np.float32] | None,
        timings: StageTimings,
    ) -> ImageResult:
        labels = self.card.labels
        malignant = self.card.malignant_index
        probs, spread = ensemble.combine_members(member_probs[:, None, :], self._weights, malignant)
        regions: tuple[Region, ...] = ()
        if heatmap is not None and self.settings.max_regions > 0:
            start = time.perf_counter()
            regions = extract_regions(
                heatmap,
                item.image.geometry,
                self.settings.cam_threshold,
                max_regions=self.settings.max_regions,
                probability=min(1.0, max(0.0, float(probs[0, malignant]))),
            )
            timings = timings + StageTimings(cam_s=time.perf_counter() - start)
        image = item.image
        return ImageResult(
            sop_instance_uid=item.sop_instance_uid,
            modality=image.modality,
            laterality=image.laterality,
            laterality_source=image.laterality_source,
            view=image.view,
            probability=float(probs[0, malignant]),
            class_probabilities={
                label: float(p) for label, p in zip(labels, probs[0], strict=True)
            },
            predicted_class=labels[int(np.argmax(probs[0]))],
            member_probabilities={
                spec.name: float(p)
                for spec, p in zip(self._specs, member_probs[:, malignant], strict=True)
            },
            uncertainty=float(spread[0]),
            regions=regions,
            geometry=image.geometry,
            timings=timings,
            heatmap=heatmap,
            display=image.display,
        )

    def _study_result(self, study_uid: str, images: tuple[ImageResult, ...]) -> StudyResult:
        mode = self.settings.breast_aggregation
        threshold = self.operating_point.threshold
        scores = ensemble.breast_scores(
            [i.laterality for i in images], [i.probability for i in images], mode
        )
        bands = self.card.ensemble.assessment
        breasts = tuple(
            BreastResult(
                laterality=side,
                score=score,
                positive=score >= threshold,
                sop_instance_uids=tuple(i.sop_instance_uid for i in images if i.laterality == side),
                assessment_category=ensemble.assessment_category(
                    score, bands.categories, bands.cut_points
                ),
            )
            for side, score in scores.items()
        )
        score = ensemble.study_score(scores)
        timings = StageTimings()
        for image in images:
            timings = timings + image.timings
        return StudyResult(
            study_uid=study_uid,
            images=images,
            breasts=breasts,
            score=score,
            positive=score >= threshold,
            operating_point=self.operating_point.name,
            threshold=threshold,
            assessment_category=ensemble.assessment_category(
                score, bands.categories, bands.cut_points
            ),
            model_name=self.card.name,
            model_version=self.card.version,
            tta=self.tta,
            breast_aggregation=mode,
            timings=timings,
            malignant_label=self.card.malignant_label,
        )


def prepare_image(
    path: Path,
    *,
    options: PreprocessOptions,
    display_size: int | None,
    max_image_bytes: int | None = None,
) -> tuple[Preprocessed | InferenceError, float]:
    """Read, decode and preprocess one stored image (here or in a decoding process),
    and the seconds it took.

    ``max_image_bytes``: refuse, before decoding, an image whose header (or compressed
    stream) declares more (:func:`~node.imaging.limits.check_image_size`). Every problem,
    expected or not, is returned as an :class:`InferenceError`, never raised: one image
    that cannot be read fails its own study, not the studies decoded beside it, and a
    decoding process hands it back like a result.
    """
    start = time.perf_counter()
    try:
        ds = read_dataset(path)
        if max_image_bytes is not None:
            check_image_size(ds, max_image_bytes)
        result: Preprocessed | InferenceError = preprocess_dataset(
            ds, options, display_size=display_size
        )
    except InferenceError as exc:
        result = exc
    except Exception as exc:  # a value nothing checked: this image only, never the batch
        result = InferenceError(f"cannot read or decode the image: {type(exc).__name__}: {exc}")
    return result, time.perf_counter() - start


def _decoder_process_init() -> None:
    """A decoding process uses one core; the worker decides how many processes run."""
    torch.set_num_threads(1)


def _runtime_reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "out of memory" in text.lower():
        return f"inference ran out of memory (lower inference.batch_size): {text}"
    return f"inference failed: {text}"
