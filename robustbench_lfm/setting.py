"""The setting of a run: the data it trains and scores on (`DataSpec`), how it scores
(`EvalSpec`) and who attacks (`ThreatSpec`), with the resolution of dataset items.

Split out of robustbench_lfm/spec.py, which re-exports every name, so callers meet them there.
Validation lives here, not in the CLI: every problem raises `SpecError` naming the problem and
the fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_lfm import datasets, models, options
from robustbench_lfm.datasets import get_dataset_info
from robustbench_lfm.hashing import canonical_json
from robustbench_lfm.parsing import Params, SpecError, parse_named
from robustbench_lfm.precision import check as check_precision

if TYPE_CHECKING:
    from robustbench_lfm.modelspec import ModelSpec


@dataclass(frozen=True)
class DataSpec:
    """A registered dataset name with its options, and for real datasets the folder it is read from.

    Attributes:
        name: registry name.
        options: the dataset's options as given (for folder datasets they include the image size).
        root: the --data-root folder, or None for generated data.
        source: fingerprint of the folder's files ("" for generated data). Checkpoint keys use it,
            not `root`, so moving a folder keeps its checkpoints and changing a file retrains.
        resolved: every option of the dataset's config, defaults filled in (CSV `data_params`).
        train_fraction: the share of the training split models train on (--train-fraction), in (0, 1].
        train_by: how the share is drawn: "images" (that share of every identity's or class's
            images) or "ids" (re-ID: that share of the identities, with all their images).
    """

    name: str
    options: Params = ()
    root: str | None = None
    source: str = ""
    resolved: Params = ()
    train_fraction: float = 1.0
    train_by: str = "images"

    def __post_init__(self) -> None:
        f = self.train_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise SpecError(f"--train-fraction {f!r} must be a number in (0, 1], e.g. 0.1 (1 = the whole split)")
        if self.train_by not in ("images", "ids"):
            raise SpecError(f"--train-by {self.train_by!r} must be 'images' or 'ids'")

    def key(self) -> dict[str, Any]:
        """What identifies the data in checkpoint and cell keys (the training share only when not at
        its key default, robustbench_lfm.options: keys from before it stand)."""
        key = {"name": self.name, "options": self.resolved or self.options, "source": self.source}
        if not options.at_key_default("train_fraction", self.train_fraction):
            key["train"] = self.train_subset()
        return key

    def train_subset(self) -> str:
        """The CSV `train_fraction`: "" for the whole training split, else `0.1 images` or `0.1 ids`."""
        return "" if self.train_fraction == 1 else f"{float(self.train_fraction):g} {self.train_by}"

    def params_json(self) -> str:
        """The CSV `data_params`: every resolved option of the dataset as canonical JSON."""
        return canonical_json(dict(self.resolved))


@dataclass(frozen=True)
class EvalSpec:
    """How retrieval is scored (docs/evaluation.md).

    Attributes:
        distance: "cosine" (1 - cos, the default) or "euclidean" (squared L2) on the post-BNNeck embedding.
        ap: "plain" (torchreid's non-interpolated AP) or "trapezoid" (the official Market script).
        flip: the evaluated model averages the embeddings of the image and its mirror; attacks
            see the same averaged model.
        rerank: "off", "on" (k-reciprocal re-ranking, Zhong et al. CVPR 2017, k1=20, k2=6,
            lambda=0.3) or "both" (each cell scored both ways from the same features).
        n_eval: score a fixed subset of this many queries (re-ID; the gallery stays whole) or test
            images (classification), drawn once by a generator seeded with 0; 0 = all of them.
        precision: "fp32" or "bf16" (autocast) for clean and attacked feature extraction.
        attack_precision: "fp32" or "bf16" for the attacks' forward and backward passes.
        score_repeats: scoring passes per cell, each a fresh forward of the same clean and
            adversarial images, averaged (a model random in eval mode: the mean and spread over
            its randomness, as Athalye et al. 2018 score randomized defences); 1 = one.
        test: the dataset scored, when not the one trained on (--test-dataset: generalization
            across domains, e.g. market1501 -> dukemtmc); None = the training dataset's own
            query and gallery (test) split.
    """

    distance: str = "cosine"
    ap: str = "plain"
    flip: bool = False
    rerank: str = "off"
    n_eval: int = 0
    precision: str = "fp32"
    attack_precision: str = "fp32"
    score_repeats: int = 1
    test: DataSpec | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n_eval, bool) or not isinstance(self.n_eval, int) or self.n_eval < 0:
            raise SpecError(f"--n-eval {self.n_eval!r} must be a whole number >= 0 (0 = every query or test image)")
        repeats = self.score_repeats
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise SpecError(f"--score-repeats {repeats!r} must be a whole number >= 1 (scoring passes per cell)")
        for value, what in ((self.precision, "--precision"), (self.attack_precision, "--attack-precision")):
            try:
                check_precision(value, what)
            except ValueError as err:
                raise SpecError(str(err)) from None

    def key(self) -> dict[str, Any]:
        """What identifies the evaluation in cell ids and the run's fingerprint: every field, an
        option at its key default left out (robustbench_lfm.options: earlier keys stand)."""
        fields = {k: v for k, v in asdict(self).items() if k != "test"}
        key = {k: v for k, v in fields.items() if not options.at_key_default(k, v)}
        if self.test is not None:  # its folder's fingerprint, not its path: as the training data's key
            key["test"] = self.test.key()
        return key

    def rerank_modes(self) -> tuple[bool, ...]:
        """The re-ranking settings each cell is scored with."""
        return {"off": (False,), "on": (True,), "both": (False, True)}[self.rerank]


@dataclass(frozen=True)
class ThreatSpec:
    """Who crafts the adversarial images and in what form the target sees them.

    Attributes:
        surrogate: transfer (black-box) setting: the images are crafted on this model (trained with
            the same data, recipe and seed) and every target is evaluated on them; None = white-box.
        quantize: adversarial images are rounded to 8 bits before evaluation (a saved PNG).
        corruptions: fingerprint of the published corrupted test sets that `corrupt:source=published`
            cells read (CIFAR-10-C under --data-root); "" when none are read. A changed file
            changes the cell ids, so its cells are recomputed.
    """

    surrogate: ModelSpec | None = None
    quantize: bool = False
    corruptions: str = ""


def resolve_data(item: str, root: str | Path | None, backbones: tuple[str, ...] = ()) -> DataSpec:
    """Parse and check the dataset item; a folder dataset's layout is checked and fingerprinted.

    Args:
        item: "name" or "name:key=value,...".
        root: the --data-root folder (folder datasets only).
        backbones: the sweep's backbones; a folder dataset with no height/width takes their input size.
    """
    name, options = parse_named(item)
    try:
        info = get_dataset_info(name)
        if info.sized_by_backbone and not {"height", "width"} & {k for k, _ in options}:
            options = tuple(sorted({**dict(options), **_input_size(name, backbones)}.items()))
        resolved = datasets.config_key(info.check_options(dict(options)))
        if root is not None and not info.needs_root:
            raise SpecError(f"--data-root is only for datasets read from a folder, not {name!r}")
        source = info.source(root)
    except KeyError as err:
        raise SpecError(str(err.args[0])) from None
    except (TypeError, ValueError) as err:
        raise SpecError(f"dataset {item!r}: {err}") from None
    params = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in resolved.items()))
    return DataSpec(name, options, None if root is None else str(Path(root).resolve()), source, params)


def _input_size(dataset: str, backbones: tuple[str, ...]) -> dict[str, int]:
    """height/width options from the backbones' common input size."""
    unsized = [b for b in backbones if b not in models.registry.BACKBONES]
    if unsized:  # a module given to evaluate() declares no input size
        raise SpecError(
            "read from a folder at the model's input size, which a model given to evaluate() does not declare: "
            f"give the size, e.g. dataset='{dataset}:height=256,width=128'"
        )
    sizes = {b: models.get_input_size(b) for b in backbones}
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{b} {h}x{w}" for b, (h, w) in sizes.items()) or "none given"
        raise SpecError(
            f"the models' backbones differ in input size ({listed}); set it with --dataset {dataset}:height=H,width=W"
        )
    h, w = next(iter(sizes.values()))
    return {"height": h, "width": w}


def resolve_test_data(
    item: str | None, root: Path | None, task: str, data: DataSpec, backbones: tuple[str, ...]
) -> DataSpec | None:
    """The --test-dataset to score, checked against the training data's task; None when absent or
    the training data itself (the same measurement as no --test-dataset)."""
    if item is None or not str(item).strip():
        return None
    test = resolve_data(item, root, backbones)
    other = get_dataset_info(test.name).task
    if other != task:
        known = ", ".join(n for n in datasets.DATASETS.names() if get_dataset_info(n).task == task)
        raise SpecError(
            f"--test-dataset {test.name} is a {other} dataset, but --dataset {data.name} trains {task}: "
            f"test on a {task} dataset ({known})"
        )
    same = (test.name, test.resolved, test.source) == (data.name, data.resolved, data.source)
    return None if same else test
