"""Other projects' own model code, for tests that compare our loaders and wrappers with it.

The released packages are fetched from the package index once (`pip download --no-deps`, into
`$LFM_BENCH_OUTSIDE` or `~/.cache/lfm-bench-tests/outside`) and their model *files* are loaded, not
the packages: torchreid's, fast-reid's and RobustBench's package imports pull in torchvision and
training dependencies that these machines cannot import, while the files that define the networks
need torch alone. Nothing of theirs is copied into this repository, and none of it is a runtime
dependency of lfm-bench.

* torchreid 0.2.5 (KaiyangZhou/deep-person-reid): `torchreid/reid/models/{resnet,osnet}.py`.
* fast-reid 1.4.0 (JDAI-CV/fast-reid): the ResNet backbone, the embedding head and the layers
  they use; the package's `__init__` files (which import its data and evaluation code) are
  replaced by empty packages and a no-op `configurable` decorator, so the classes run as written.
* RobustBench 1.1.1: `robustbench/model_zoo/architectures/wide_resnet.py`.
* torchvision (installed beside torchattacks, never importable here): `torchvision/models/resnet.py`,
  read from the installed package's folder; its imports of the weights registry, presets and
  logging are replaced by inert stand-ins (they only describe downloadable weights).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import torch
from torch import nn

PACKAGES = {"torchreid": "0.2.5", "fastreid": "1.4.0", "robustbench": "1.1.1"}


def root() -> Path:
    """Where the released packages are unpacked (fetched on first use)."""
    base = os.environ.get("LFM_BENCH_OUTSIDE") or Path.home() / ".cache" / "lfm-bench-tests" / "outside"
    return Path(base)


def unpacked(package: str) -> Path:
    """The folder holding `package`'s released files, downloading and unpacking it once."""
    version = PACKAGES[package]
    folder = root() / f"{package}-{version}"
    if (folder / ".complete").is_file():
        return folder
    downloads = root() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    found = sorted(downloads.glob(f"{package}-{version}*"))
    if not found:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(downloads)]
        done = subprocess.run([*command, f"{package}=={version}"], capture_output=True, text=True, timeout=600)
        found = sorted(downloads.glob(f"{package}-{version}*"))
        if done.returncode or not found:
            raise RuntimeError(f"could not fetch {package}=={version} from the package index: {done.stderr[-400:]}")
    _unpack(found[0], folder)
    (folder / ".complete").write_text(found[0].name)
    return folder


def _unpack(archive: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            z.extractall(folder)
        return
    with tarfile.open(archive) as t:
        t.extractall(folder, filter="data")
        inner = [p for p in folder.iterdir() if p.is_dir()]
        if len(inner) == 1:  # sdists hold one top folder: lift its contents
            for item in inner[0].iterdir():
                item.rename(folder / item.name)


def load_file(path: Path, name: str) -> types.ModuleType:
    """Execute one source file as the module `name` (its own imports must be importable)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def torchreid_models() -> tuple[types.ModuleType, types.ModuleType]:
    """torchreid's `resnet` and `osnet` model files."""
    where = unpacked("torchreid") / "torchreid" / "reid" / "models"
    return load_file(where / "resnet.py", "outside_torchreid_resnet"), load_file(where / "osnet.py", "outside_osnet")


def robustbench_wide_resnet() -> types.ModuleType:
    """RobustBench's model-zoo WideResNet file."""
    path = unpacked("robustbench") / "robustbench" / "model_zoo" / "architectures" / "wide_resnet.py"
    return load_file(path, "outside_robustbench_wide_resnet")


def torchvision_resnet() -> types.ModuleType:
    """torchvision's `torchvision/models/resnet.py` from the installed package (found, never imported)."""
    if "torchvision.models.resnet" in sys.modules:
        return sys.modules["torchvision.models.resnet"]
    spec = importlib.util.find_spec("torchvision")
    assert spec is not None and spec.origin is not None, "torchvision is installed with torchattacks"
    base = Path(spec.origin).parent
    _empty_package("torchvision", base)
    _empty_package("torchvision.models", base / "models")
    _empty_package("torchvision.transforms", base / "transforms")

    class WeightsEnum:
        @classmethod
        def verify(cls, weights: object) -> object:
            return weights

    def overwrite(kwargs: dict, name: str, value: object) -> None:
        kwargs[name] = value

    stand_ins = {
        "torchvision.transforms._presets": {"ImageClassification": object},
        "torchvision.utils": {"_log_api_usage_once": lambda obj: None},
        "torchvision.models._api": {
            "register_model": lambda *a, **k: (lambda f: f), "Weights": lambda **k: k, "WeightsEnum": WeightsEnum,
        },
        "torchvision.models._meta": {"_IMAGENET_CATEGORIES": []},
        "torchvision.models._utils": {
            "_ovewrite_named_param": overwrite, "handle_legacy_interface": lambda **k: (lambda f: f),
        },
    }  # fmt: skip
    for name, attributes in stand_ins.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module
    return load_file(base / "models" / "resnet.py", "torchvision.models.resnet")


def _empty_package(name: str, path: Path) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module
    return module


def fastreid_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """fast-reid's `modeling/backbones/resnet.py` and `modeling/heads/embedding_head.py`."""
    if "fastreid.modeling.heads.embedding_head" in sys.modules:
        return sys.modules["fastreid.modeling.backbones.resnet"], sys.modules["fastreid.modeling.heads.embedding_head"]
    base = unpacked("fastreid") / "fastreid"
    _empty_package("fastreid", base)
    for sub in ("utils", "modeling", "modeling/backbones", "modeling/heads"):
        _empty_package("fastreid." + sub.replace("/", "."), base / sub)
    checkpoint = types.ModuleType("fastreid.utils.checkpoint")
    checkpoint.get_missing_parameters_message = checkpoint.get_unexpected_parameters_message = str  # type: ignore[attr-defined]
    sys.modules["fastreid.utils.checkpoint"] = checkpoint
    sys.modules["fastreid.utils.comm"] = types.ModuleType("fastreid.utils.comm")
    config = types.ModuleType("fastreid.config")
    config.configurable = lambda init_func=None, **_: init_func  # type: ignore[attr-defined]  # keyword calls only
    sys.modules["fastreid.config"] = config
    return (
        importlib.import_module("fastreid.modeling.backbones.resnet"),
        importlib.import_module("fastreid.modeling.heads.embedding_head"),
    )


class FastReIDBaseline(nn.Module):
    """fast-reid's `Baseline` meta-architecture at evaluation, as `meta_arch/baseline.py` runs it:
    0-255 images minus `pixel_mean` over `pixel_std` (non-persistent buffers, as there), backbone,
    heads. Its state dict is the one fast-reid's checkpointer saves."""

    def __init__(self, num_classes: int, last_stride: int = 1) -> None:
        super().__init__()
        resnet, head = fastreid_modules()
        self.backbone = resnet.ResNet(last_stride, "BN", False, False, False, resnet.Bottleneck, [3, 4, 6, 3], [0] * 4)
        self.heads = head.EmbeddingHead(
            feat_dim=2048, embedding_dim=0, num_classes=num_classes, neck_feat="after", pool_type="GlobalAvgPool",
            cls_type="Linear", scale=1, margin=0.0, with_bnneck=True, norm_type="BN",
        )  # fmt: skip  # fast-reid's configs/Base-bagtricks.yml
        mean, std = [0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255]
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, -1, 1, 1), False)

    def forward(self, images_0_255: torch.Tensor) -> torch.Tensor:
        return self.heads(self.backbone((images_0_255 - self.pixel_mean) / self.pixel_std))


def randomise_batch_norm(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters, so a BN mapped to the wrong place cannot hide
    behind the identity that fresh statistics (mean 0, variance 1, weight 1, bias 0) compute."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                if m.bias is not None and m.bias.requires_grad:
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
    return net.eval()
