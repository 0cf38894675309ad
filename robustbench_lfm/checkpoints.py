"""Models evaluated as given, never trained: `--models ckpt:PATH` and `robustbench_lfm.evaluate`.

`ckpt:PATH[,model=NAME,backbone=NAME,key=value...]` reads a trained model's state dict from a
file (safetensors, or a `.pth` read with `torch.load(weights_only=True)`, as `--pretrained`) in
one of three layouts (robustbench_lfm/models/pretrained.py): lfm-bench's own checkpoints (the cache's
`checkpoints/<key>.safetensors`; its sidecar names the model, so `model=` is not needed),
torchreid's and fast-reid's ResNet-50 re-ID models. `model=` (default: the sidecar's, else
`plain`) and its `key=value` options give the architecture the file loads into; `backbone=`
defaults to the sidecar's, else `resnet50` for torchreid and fast-reid files, else the recipe's.
The file is read, loaded and run on a probe batch when the run is built, so a file that does
not fit is refused before any work. Its sha256 is the model's identity: the label
(`ckpt:lfm@3fa91c2e`), `model_params` (`weights_sha256`), `checkpoint_sha256` and so the gate.

`evaluate()` registers an in-process module under its state dict's sha256 (`register_external`);
the sweep's worker finds it there (the local executor runs in this process).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustbench_lfm import models
from robustbench_lfm.datasets import ClassificationDataset, Dataset, as_float
from robustbench_lfm.files import UnverifiedFileError, read_sidecar
from robustbench_lfm.hashing import file_sha256
from robustbench_lfm.models.backbones import parse_strides
from robustbench_lfm.models.pretrained import (
    ARCHITECTURES,
    STEMS,
    PretrainedError,
    classifier_rows,
    detect_layout,
    load_reid_layout,
    set_architecture,
)
from robustbench_lfm.modelspec import CHECKPOINT_PREFIX, ModelSpec
from robustbench_lfm.parsing import SpecError, format_param, parse_named
from robustbench_lfm.pretrained import read_state_dict, verified_state
from robustbench_lfm.recipe import TrainRecipe

_EXTERNAL: dict[str, nn.Module] = {}  # evaluate()'s modules by state dict sha256, this process only
_NOTES: dict[str, dict[str, Any]] = {}  # what register_external changed on them, for the manifest


class ModelOutputError(SpecError):
    """A given model's output has the wrong shape, dtype or non-finite values."""


def parse_checkpoint_item(item: str) -> tuple[Path, dict[str, Any]]:
    """'ckpt:PATH,model=lfm,p=0.3' -> (PATH, {'model': 'lfm', 'p': 0.3})."""
    rest = item.strip()[len(CHECKPOINT_PREFIX) :]
    first, _, more = rest.partition(",")
    first = first.strip().removeprefix("path=")
    if not first or "=" in first:
        raise SpecError(f"model {item!r}: write ckpt:PATH[,model=NAME,backbone=NAME] with the file first")
    _, options = parse_named("ckpt:" + more)
    return Path(first).expanduser().resolve(), dict(options)


ResolveModel = Callable[[str, "str | None", TrainRecipe], ModelSpec]


def resolve_checkpoint(item: str, backbone: str | None, recipe: TrainRecipe, resolve: ResolveModel) -> ModelSpec:
    """The spec of a checkpoint to evaluate, its file read, loaded and probed now (SpecError);
    `resolve` resolves its architecture's model item (robustbench_lfm.spec.resolve_model)."""
    path, options = parse_checkpoint_item(item)
    try:
        state = read_state_dict(path, what="ckpt:")
    except PretrainedError as err:
        raise SpecError(str(err)) from None
    layout = detect_layout(state)
    if layout is None:
        keys = ", ".join(sorted(state)[:5])
        raise SpecError(
            f"ckpt:{path} is in no known layout (lfm-bench, torchreid, fast-reid ResNet); its first keys: {keys}"
        )
    task = "classification" if layout == "lfm-bench" and "fc.weight" in state else "reid"
    if task != recipe.task:
        raise SpecError(f"ckpt:{path} holds a {task} model; the run's dataset is for {recipe.task}")
    arch = _architecture(path, layout, options)
    base = _base_model(path, layout, options, backbone, recipe, resolve)
    net = build_checkpoint_net(base, state, layout, task, arch)
    probe_output(net, torch.rand(2, 3, *models.get_input_size(base.backbone)), task, f"ckpt:{path}")
    sha = file_sha256(path)
    resolved = tuple(sorted({**dict(base.resolved), **arch, "layout": layout, "weights_sha256": sha}.items()))
    return ModelSpec(
        "ckpt", base.backbone, base.regularizer, (), resolved, "checkpoint", weights=sha, base=base, path=str(path)
    )


class AssumedArchitecture(UserWarning):
    """A checkpoint of another project was loaded into the variant its current release builds."""


def _architecture(path: Path, layout: str, options: dict[str, Any]) -> dict[str, str]:
    """`strides` and `stem` of a torchreid or fast-reid network (robustbench_lfm/models/pretrained.py ARCHITECTURES):
    the options given (taken out of `options`), else the current release's, announced by a warning."""
    given: dict[str, str] = {k: str(options.pop(k)) for k in ("strides", "stem") if k in options}
    if layout not in ARCHITECTURES:
        if given:
            raise SpecError(
                f"ckpt:{path}: strides= and stem= are for torchreid and fast-reid files; an lfm-bench "
                "checkpoint's sidecar names its model (give model=rcm-stride for RCM's strides)"
            )
        return {}
    arch: dict[str, str] = {**ARCHITECTURES[layout]}
    arch.update(given)
    try:
        arch["strides"] = "".join(map(str, parse_strides(arch["strides"], (1, 2, 2, 1))))
    except ValueError as err:
        raise SpecError(f"ckpt:{path}: {err}") from None
    if arch["stem"] not in STEMS:
        raise SpecError(f"ckpt:{path}: stem={arch['stem']!r} is not one of {', '.join(STEMS)}")
    assumed = [k for k in ("strides", "stem") if k not in given]
    if assumed:
        other = {"torchreid": "strides=1221 for a resnet50 built with last_stride=1",
                 "fast-reid": "stem=torchvision for fast-reid code whose stem max-pool pads by 1 (older code), "
                              "strides=1222 for LAST_STRIDE 2"}[layout]  # fmt: skip
        warnings.warn(
            f"ckpt:{path}: a {layout} ResNet-50; assumed {', '.join(f'{k}={arch[k]}' for k in assumed)} "
            f"(the current {layout} release's network); give {other}",
            AssumedArchitecture,
            stacklevel=2,
        )
    return arch


def _base_model(
    path: Path, layout: str, options: dict[str, Any], backbone: str | None, recipe: TrainRecipe, resolve: ResolveModel
) -> ModelSpec:
    """The registered model the checkpoint loads into: `model=` with its options, else the one its
    lfm-bench sidecar records, else `plain`."""
    options = dict(options)
    name = options.pop("model", None)
    bb = options.pop("backbone", None) or backbone
    recorded = _recorded_model(path) if layout == "lfm-bench" else None
    if name is None and recorded is not None and not options:
        return _model_from_json(recorded, bb)
    if layout != "lfm-bench":
        bb = bb or "resnet50"
    elif recorded is not None:
        bb = bb or str(recorded.get("backbone") or "")
    label = str(name or "plain") + (
        ":" + ",".join(f"{k}={format_param(v)}" for k, v in options.items()) if options else ""
    )
    return resolve(label, bb or None, recipe)


def _recorded_model(path: Path) -> dict[str, Any] | None:
    """The model an lfm-bench checkpoint's sidecar records (None without a verified sidecar)."""
    try:
        meta = read_sidecar(path, bound=False)  # a user's file: any name
    except UnverifiedFileError as err:
        raise SpecError(f"ckpt:{path}: {err}; give model= and backbone= or the file's own sidecar") from None
    model = None if meta is None else meta.get("model")
    return model if isinstance(model, dict) else None


def _model_from_json(d: dict[str, Any], backbone: str | None) -> ModelSpec:
    """A ModelSpec as a checkpoint sidecar recorded it (asdict), teacher dropped (not evaluated)."""

    def tuples(v: Any) -> Any:
        return tuple(tuples(x) for x in v) if isinstance(v, list) else v

    try:
        spec = ModelSpec(
            str(d["name"]), str(backbone or d["backbone"]), str(d["regularizer"]), tuples(d.get("params", [])),
            tuples(d.get("resolved", [])), str(d.get("method", "standard")), None, str(d.get("pretrained", "")),
        )  # fmt: skip
        models.get_model_entry(spec.name)
    except (KeyError, TypeError, models.UnknownNameError) as err:
        raise SpecError(f"the checkpoint's sidecar names a model this lfm-bench cannot build ({err})") from None
    return spec


def build_checkpoint_net(
    base: ModelSpec, state: dict[str, Tensor], layout: str, task: str, arch: dict[str, str] | None = None
) -> nn.Module:
    """`base`'s network, with a torchreid or fast-reid file's `arch` (strides, stem), holding the
    checkpoint's weights (SpecError naming the keys that do not fit)."""
    rows = classifier_rows(state, layout) or 2
    try:
        net = models.create_model(base.name, rows, task, **base.overrides())
        if arch:
            set_architecture(net.backbone, tuple(int(d) for d in arch["strides"]), arch["stem"])
        load_reid_layout(net, state, layout)
    except (PretrainedError, TypeError, ValueError) as err:
        raise SpecError(f"checkpoint into {base.label} ({base.backbone}): {err}") from None
    return net.eval()


def load_given(spec: ModelSpec, device: torch.device) -> nn.Module:
    """The network of a given model on `device`, in eval mode: the checkpoint read again (and
    checked to be the file the run was built with) or the module `evaluate` registered."""
    if spec.method == "external":
        if spec.weights not in _EXTERNAL:
            raise SpecError(f"model {spec.label!r} was given to evaluate() in another process; run it with jobs=1")
        return _EXTERNAL[spec.weights].to(device).eval()
    assert spec.base is not None
    try:
        state = verified_state(Path(spec.path), spec.weights, "ckpt:")
    except PretrainedError as err:
        raise SpecError(str(err)) from None
    resolved = dict(spec.resolved)
    layout = str(resolved["layout"])
    task = "classification" if "fc.weight" in state and layout == "lfm-bench" else "reid"
    arch: dict[str, str] = {k: str(resolved[k]) for k in ("strides", "stem") if k in resolved}
    net = build_checkpoint_net(spec.base, state, layout, task, arch).to(device)
    return net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's stub


def state_sha256(module: nn.Module) -> str:
    """sha256 of a module's class name and tensors: each state dict entry's name, dtype, shape and
    bytes, then the non-persistent buffers the state dict leaves out (they change outputs too)."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in _all_tensors(module):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def _all_tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    """The state dict's entries by name, then `buffer:NAME` for each non-persistent buffer."""
    state = module.state_dict(keep_vars=False)
    extra = [(f"buffer:{n}", b) for n, b in module.named_buffers(remove_duplicate=False) if n not in state]
    return sorted(state.items()) + sorted(extra, key=lambda item: item[0])


def tensor_bytes(tensor: Tensor) -> bytes:
    """The raw bytes of any dense or sparse tensor: 0-dim, integer, bool, bf16 and complex included."""
    t = tensor.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    t = t.cpu().contiguous().reshape(-1)  # reshape: a 0-dim tensor cannot be viewed as bytes
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _tensor_digests(module: nn.Module) -> dict[str, str]:
    """Each tensor's sha256, to name the ones a forward pass changed."""
    return {name: hashlib.sha256(tensor_bytes(t)).hexdigest() for name, t in _all_tensors(module)}


def register_external(module: nn.Module, name: str) -> ModelSpec:
    """The spec of an in-process model given to `evaluate`, registered for this process's worker.
    A module left in train mode is put in eval mode; the manifest records that (`external_notes`)."""
    training = sorted(n or type(module).__name__ for n, m in module.named_modules() if m.training)
    module.eval()
    sha = state_sha256(module)
    _EXTERNAL[sha] = module
    _NOTES.pop(sha, None)  # the same weights registered again: this call's notes alone
    if training:
        _NOTES[sha] = {"put_in_eval_mode": f"{len(training)} module(s) were in train mode: {', '.join(training[:4])}"}
    return ModelSpec(name, "external", "external", (), (("weights_sha256", sha),), "external", weights=sha)


def external_notes(spec: ModelSpec) -> dict[str, Any]:
    """What evaluate() changed on a given module before scoring it (for the manifest)."""
    return dict(_NOTES.get(spec.weights or "", {}))


def probe_output(net: nn.Module, images: Tensor, task: str, what: str, num_classes: int | None = None) -> Tensor:
    """Run `net` on a few [0, 1] images and refuse an output that is not one finite row of floats
    per image (and, for a classifier, one logit per class); the output."""
    net.eval()
    try:
        with torch.inference_mode():
            out = net(images.to(next((p.device for p in net.parameters()), torch.device("cpu"))))
    except Exception as err:  # the user's model fails on our images: say so in one line
        raise ModelOutputError(f"{what} fails on a batch of {tuple(images.shape)} images in [0, 1]: {err}") from None
    kind = "logits" if task == "classification" else "embeddings"
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != images.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelOutputError(f"{what} must map images (N, 3, H, W) in [0, 1] to {kind} (N, D); it returned {shape}")
    if not out.is_floating_point() or not math.isfinite(float(out.float().abs().sum())):
        raise ModelOutputError(f"{what} returned non-finite or non-float {kind} on clean images")
    if num_classes is not None and task == "classification" and out.shape[1] != num_classes:
        raise ModelOutputError(f"{what} returns {out.shape[1]} logits; the dataset has {num_classes} classes")
    return out


def probe_repeatable(net: nn.Module, images: Tensor, task: str, what: str, num_classes: int | None = None) -> float:
    """How random the model's eval-mode output is: the largest gap between two forwards of the same
    images, relative to the output's scale (0.0 for a deterministic model; kernels may round
    below RANDOM_GAP, random layers do not). A forward that changes the model's own tensors
    (running statistics updated in eval mode, weights edited) is refused: every number would
    depend on the order in which the harness happens to call it."""
    before = _tensor_digests(net)
    first = probe_output(net, images, task, what, num_classes)
    second = probe_output(net, images, task, what, num_classes)
    changed = [name for name, digest in _tensor_digests(net).items() if before.get(name) != digest]
    if changed:
        raise ModelOutputError(
            f"{what} changes its own tensors in forward ({', '.join(changed[:4])}); evaluate a model whose "
            "eval-mode forward leaves its weights and buffers as they are"
        )
    gap = float((first.float() - second.float()).abs().max()) / max(1.0, float(first.float().abs().max()))
    return gap if gap > RANDOM_GAP else 0.0


RANDOM_GAP = 1e-5  # relative gap between two forwards above which a model counts as random in eval mode


def probe_given_models(specs: tuple[ModelSpec, ...], data: Dataset, device: torch.device) -> dict[str, float]:
    """Check every given model on the dataset's first images before any cell runs (SpecError);
    the label and relative gap of each one random in eval mode (the run records them)."""
    classes = data.num_classes if isinstance(data, ClassificationDataset) else None
    images = data.test.images if isinstance(data, ClassificationDataset) else data.query.images
    batch = as_float(images[:4])
    task = "classification" if classes is not None else "reid"
    random: dict[str, float] = {}
    for spec in specs:
        if spec.given:
            what = f"model {spec.label!r}"
            gap = probe_repeatable(load_given(spec, device), batch.to(device), task, what, classes)
            if gap:
                random[spec.label] = gap
    return random
