"""Models evaluated as given: `robustbench_lfm.evaluate(model)` and `--models ckpt:PATH`."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import robustbench_lfm
from robustbench_lfm.checkpoints import AssumedArchitecture
from robustbench_lfm.cli import main
from robustbench_lfm.parsing import SpecError
from robustbench_lfm.store import COLUMNS
from tests.test_pretrained import _Planted, torchvision_resnet50_state
from tests.test_threats import DATA


class ColourNet(nn.Module):
    """A model defined here, nothing like ours: the standardised 6x2 colour layout of the image's
    centre (where the person stands) through a fixed orthogonal projection. Synthreid's identities
    differ in clothing colours, so it retrieves fairly well with no training."""

    def __init__(self, seed: int = 0, dim: int = 36, broken: str = "") -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(36, 36, generator=torch.Generator().manual_seed(seed)))
        self.proj = nn.Parameter(q[:, :dim].contiguous())
        self.broken = broken

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        centre = x[..., h // 8 : h - h // 8, w // 4 : w - w // 4]
        grid = nn.functional.adaptive_avg_pool2d(centre, (6, 2))
        grid = (grid - grid.mean((2, 3), keepdim=True)) / (grid.std((2, 3), keepdim=True) + 1e-3)
        out = grid.flatten(1) @ self.proj
        if self.broken == "shape":
            return out.sum(1)
        if self.broken == "nan":
            return out * float("nan")
        return out


def _evaluate(model, out=None, **kw):
    options = {"dataset": DATA, "attacks": ("pgd:steps=3",), "eps": (8 / 255,), "out": out, **kw}
    return robustbench_lfm.evaluate(model, **options)


def test_evaluate_a_model_defined_in_this_file_and_report_its_run(tmp_path):
    from robustbench_lfm.report import build_report

    df = _evaluate(ColourNet(), tmp_path / "run", attacks=("pgd:steps=5",), eps=(8 / 255, 32 / 255))
    assert list(df.columns) == list(COLUMNS)
    assert set(df["model"]) == {"my-model"} and set(df["regularizer"]) == {"external"}
    rank1 = df[df["metric"] == "rank1"].set_index("eps")["value"]
    assert rank1[0.0] > 0.3  # clean: the colours identify people (about 0.48)
    assert rank1[32 / 255] < rank1[0.0] - 0.1  # PGD through the model's own gradients (its pooling resists 8/255)
    assert df["checkpoint_sha256"].nunique() == 1 and len(df["checkpoint_sha256"].iloc[0]) == 64
    sanity = pd.read_csv(tmp_path / "run" / "sanity.csv")
    assert len(sanity) and sanity["passed"].all()
    report = build_report(tmp_path / "run")
    text = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "my-model" in text and "pgd:steps=5 32/255 Rank-1" in text and report.markdown.exists()
    gate = CliRunner().invoke(
        main, ["check", str(tmp_path / "run"), "--baseline", str(tmp_path / "run" / "results.csv")]
    )
    assert gate.exit_code == 0, gate.output


def test_two_models_of_one_name_stay_apart_and_a_rerun_resumes(tmp_path):
    first = _evaluate(ColourNet(seed=0), tmp_path / "run", name="colour")
    again = _evaluate(ColourNet(seed=0), tmp_path / "run", name="colour")  # same weights: same cells, resumed
    pd.testing.assert_frame_equal(first, again)
    both = _evaluate(ColourNet(seed=1), tmp_path / "run", name="colour")
    assert both["checkpoint_sha256"].nunique() == 2 and both["cell_id"].nunique() == 2 * first["cell_id"].nunique()
    from robustbench_lfm.identity import labelled

    rows = labelled(both)["row"].unique()
    assert len(rows) == 2 and all(r.startswith("colour #") for r in rows)


def test_evaluate_without_out_returns_the_table_and_leaves_no_directory(tmp_path):
    df = _evaluate(ColourNet(), None, eps=(4 / 255,), name="tmp-model")
    assert set(df["eps"]) == {0.0, 4 / 255} and set(df["model"]) == {"tmp-model"}


@pytest.mark.parametrize(
    ("model", "kw", "message"),
    [
        ("not a module", {}, "takes a torch.nn.Module, not str"),
        (ColourNet(broken="shape"), {}, "to embeddings (N, D); it returned (4,)"),
        (ColourNet(broken="nan"), {}, "returned non-finite"),
        (ColourNet(dim=7), {"dataset": "digits"}, "returns 7 logits; the dataset has 10 classes"),
        (ColourNet(), {"name": "a,b"}, "must be letters, digits"),
        (ColourNet(), {"eps": 8 / 255}, "eps is a sequence or the CLI's comma text"),
        (ColourNet(), {"test": "synthreid:domain=b"}, "unknown keyword 'test'; did you mean test_dataset?"),
        (ColourNet(), {"epochs": 3}, "`epochs` is an `lfm-bench run` option for registered models"),
        (ColourNet(), {"distance": "cos"}, "evaluate(): distance='cos' must be one of cosine, euclidean"),
        (ColourNet(), {"n_eval": -1}, "evaluate(): n_eval=-1 must lie in "),
        (ColourNet(), {"dataset": "market1501", "data_root": "."}, "give the size, e.g. dataset='market1501:height"),
        (ColourNet(), {"eps": (float("nan"),)}, "is not a number"),
        (ColourNet(), {"attacks": ("pgd:stepz=3",)}, "stepz"),
    ],
)
def test_bad_models_and_arguments_are_refused_and_nothing_recorded_is_lost(tmp_path, model, kw, message):
    digits = {"dataset": "digits"} if kw.get("dataset") == "digits" else {}
    kept = _evaluate(ColourNet(dim=10 if digits else 36), tmp_path / "run", attacks=("fgsm",), **digits)
    before = (tmp_path / "run" / "results.csv").read_bytes()
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _evaluate(model, tmp_path / "run", **{"attacks": ("fgsm",), **kw})
    assert (tmp_path / "run" / "results.csv").read_bytes() == before and len(kept)


def _cli(*args):
    return CliRunner().invoke(main, ["run", "--dataset", DATA, "--epochs", "2", "--eps", "8/255", "-q", *args])


def test_ckpt_on_a_checkpoint_of_an_earlier_sweep_gives_that_sweeps_numbers(tmp_path):
    cache = tmp_path / "cache"
    common = ["--attacks", "pgd:steps=2,sma", "--cache-dir", str(cache), "--no-baseline"]
    swept = _cli("--models", "lfm:p=0.3", "--out", str(tmp_path / "sweep"), *common)
    assert swept.exit_code == 0, swept.output
    (weights,) = (cache / "checkpoints").glob("*.safetensors")
    loaded = _cli("--models", f"ckpt:{weights}", "--out", str(tmp_path / "ckpt"), *common)
    assert loaded.exit_code == 0, loaded.output
    for table in ("results.csv", "probes.csv"):
        a, b = (pd.read_csv(tmp_path / d / table, keep_default_na=False) for d in ("sweep", "ckpt"))
        on = ["attack", "attack_params", "eps", "metric", "rerank", "train_seed"]
        both = a.merge(b, on=on, suffixes=("_sweep", "_ckpt"), validate="one_to_one")
        assert len(both) == len(a) == len(b) > 0
        assert (both["value_sweep"] == both["value_ckpt"]).all()  # exactly the same numbers
        assert (both["checkpoint_sha256_sweep"] == both["checkpoint_sha256_ckpt"]).all()
    b = pd.read_csv(tmp_path / "ckpt" / "results.csv")
    sha = b["checkpoint_sha256"].iloc[0]
    assert set(b["model"]) == {f"ckpt:lfm:p=0.3@{sha[:8]}"} and set(b["regularizer"]) == {"lfm"}
    assert f'"weights_sha256": "{sha}"' in b["model_params"].iloc[0] and '"p": 0.3' in b["model_params"].iloc[0]


def _reid_state(layout: str) -> dict[str, torch.Tensor]:
    """A ResNet-50 re-ID state dict under the names of torchreid's or fast-reid's code, with 5
    training identities (written from their published modules, not from our key map)."""
    trunk = {k: _tame(k, v) for k, v in torchvision_resnet50_state(seed=3).items() if not k.startswith("fc.")}
    g = torch.Generator().manual_seed(4)
    if layout == "torchreid":  # torchreid/models/resnet.py: trunk + classifier (Linear with bias)
        return {**trunk, "classifier.weight": torch.randn(5, 2048, generator=g), "classifier.bias": torch.zeros(5)}
    neck = {f"heads.bottleneck.0.{k}": torch.rand(2048, generator=g) + 0.5
            for k in ("weight", "bias", "running_mean", "running_var")}  # fmt: skip
    return {
        **{f"backbone.{k}": v for k, v in trunk.items()},
        **neck,
        "heads.bottleneck.0.num_batches_tracked": torch.tensor(9),
        "heads.weight": torch.randn(5, 2048, generator=g),
        "pixel_mean": torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1),
        "pixel_std": torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1),
    }


def _tame(key: str, value: torch.Tensor) -> torch.Tensor:
    """Random weights scaled so 16 bottlenecks keep activations finite (He-style conv scale)."""
    if value.dim() == 4:
        return value * (2.0 / value[0].numel()) ** 0.5
    if key.endswith("running_var"):
        return value + 0.5
    return value * 0.5 if key.endswith(("weight", "bias")) else value


@pytest.mark.parametrize("layout", ["torchreid", "fast-reid"])
def test_wrapped_and_dataparallel_files_load_as_the_bare_state_dict(tmp_path, layout):
    """The embeddings themselves are compared with torchreid's and fast-reid's own code in
    tests/test_outside_models.py; here a `{"state_dict": {"module.*": ...}}` file gives the same
    network as the bare state dict."""
    from robustbench_lfm.checkpoints import load_given
    from robustbench_lfm.recipe import load_recipe
    from robustbench_lfm.spec import resolve_model

    state = _reid_state(layout)
    torch.save(state, tmp_path / "bare.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 60}, tmp_path / "wrapped.pth")
    nets = []
    for name in ("bare", "wrapped"):
        with pytest.warns(AssumedArchitecture):
            spec = resolve_model(f"ckpt:{tmp_path / name}.pth", None, load_recipe("cpu", "reid"))
        assert spec.backbone == "resnet50" and dict(spec.resolved)["layout"] == layout
        nets.append(load_given(spec, torch.device("cpu")))
    x = torch.rand(2, 3, 64, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(nets[0](x), nets[1](x)) and torch.isfinite(nets[0](x)).all()
    assert torch.equal(
        nets[1].classifier.weight, state["classifier.weight" if layout == "torchreid" else "heads.weight"]
    )


def test_a_torchreid_checkpoint_runs_end_to_end(tmp_path):
    path = tmp_path / "torchreid.pth"
    torch.save(_reid_state("torchreid"), path)
    result = _cli("--models", f"ckpt:{path}", "--attacks", "fgsm", "--no-baseline", "--out", str(tmp_path / "r"),
                  "--cache-dir", str(tmp_path / "c"), "--batch-size", "32")  # fmt: skip
    assert result.exit_code == 0, result.output
    df = pd.read_csv(tmp_path / "r" / "results.csv")
    assert df["model"].str.startswith("ckpt:plain@").all() and '"layout": "torchreid"' in df["model_params"].iloc[0]


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """A run directory (and its cache) with a plain model's cells: a bad ckpt must leave it as it is."""
    root = tmp_path_factory.mktemp("recorded")
    kept = _cli("--models", "plain", "--attacks", "fgsm", "--epochs", "1", "--out", str(root / "run"), "--cache-dir",
                str(root / "c"))  # fmt: skip
    assert kept.exit_code == 0, kept.output
    return root


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("pickle", "is not a readable state dict"),
        ("text", "is not a readable state dict"),
        ("unknown", "is in no known layout"),
        ("missing", "missing: layer4.2.bn3.num_batches_tracked"),
        ("nan", "returned non-finite"),
        ("classifier", "holds a classification model; the run's dataset is for reid"),
        ("absent", "is not a file"),
    ],
)
def test_a_bad_checkpoint_is_one_line_and_status_2(tmp_path, capfd, recorded_run, content, message):
    import pickle

    path = tmp_path / "ckpt.pth"
    state = _reid_state("torchreid")
    if content == "pickle":
        path.write_bytes(pickle.dumps({"conv1.weight": _Planted()}))
    elif content == "text":
        path.write_text("not a state dict")
    elif content == "unknown":
        torch.save({"encoder.weight": torch.zeros(2)}, path)
    elif content == "missing":
        torch.save({k: v for k, v in state.items() if k != "layer4.2.bn3.num_batches_tracked"}, path)
    elif content == "nan":
        torch.save({**state, "layer4.2.bn3.bias": torch.full((2048,), float("nan"))}, path)
    elif content == "classifier":
        from robustbench_lfm import models

        torch.save(models.create_model("plain", 10, "classification", backbone="resnet-mini").state_dict(), path)
    run, cache = tmp_path / "run", tmp_path / "c"
    shutil.copytree(recorded_run / "run", run)
    shutil.copytree(recorded_run / "c", cache)
    before = (run / "results.csv").read_bytes()
    result = _cli(
        "--models", f"ckpt:{path}", "--attacks", "fgsm", "--epochs", "1", "--out", str(run), "--cache-dir", str(cache)
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lfm-bench: error: ") and message in lines[0], lines
    assert "a planted pickle ran" not in capfd.readouterr().out + result.output
    assert (run / "results.csv").read_bytes() == before


class BNNet(nn.Module):
    """A small CNN with what real models hold: BatchNorm (0-dim int64 `num_batches_tracked`), a
    bool buffer, a non-persistent buffer and a weight shared under two names; `mode` breaks it."""

    def __init__(self, mode: str = "") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 16)
        self.tied = self.head  # one weight, two names in the state dict
        self.register_buffer("enabled", torch.tensor([True, False]))
        self.register_buffer("scale", torch.tensor(1.0), persistent=False)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "self-editing":
            self.scale += 1  # an eval-mode forward that changes the model
        h = self.bn(self.conv(x)).relu().mean((2, 3)) * self.scale
        if self.mode == "random":
            h = nn.functional.dropout(h, 0.5, training=True)  # dropout left active in eval mode
        return self.head(h)


def test_the_weights_hash_covers_every_kind_of_tensor():
    from robustbench_lfm.checkpoints import state_sha256

    torch.manual_seed(0)
    net = BNNet()
    base = state_sha256(net)
    assert state_sha256(_copy(net)) == base  # equal tensors, equal hash
    for edit in (
        lambda m: m.bn.num_batches_tracked.add_(1),  # 0-dim int64
        lambda m: m.enabled.logical_not_(),  # bool
        lambda m: m.scale.mul_(2),  # non-persistent: not in the state dict, still changes outputs
        lambda m: m.tied.weight.data.add_(1e-3),  # shared
        lambda m: m.bn.running_var.mul_(1.5),
    ):
        other = _copy(net)
        edit(other)
        assert state_sha256(other) != base
    half = _copy(net).to(torch.bfloat16)
    assert state_sha256(half) not in (base, "")


def _copy(net: BNNet) -> BNNet:
    other = BNNet(net.mode)
    other.load_state_dict(net.state_dict())
    other.scale.copy_(net.scale)
    return other


def test_a_batchnorm_model_left_in_train_mode_is_scored_in_eval_mode_and_the_manifest_says_so(tmp_path):
    import json

    torch.manual_seed(0)
    net = BNNet()
    with torch.no_grad():  # settle the BN statistics, as a trained model has them
        for _ in range(3):
            net(torch.rand(32, 3, 64, 32))
    stats = net.bn.running_mean.clone()
    left_training = _evaluate(net.train(), tmp_path / "train", attacks=("fgsm",), name="bn-net")
    scored_eval = _evaluate(_copy(net).eval(), tmp_path / "eval", attacks=("fgsm",), name="bn-net")
    assert torch.equal(net.bn.running_mean, stats)  # scoring never updated its statistics
    assert left_training["value"].tolist() == scored_eval["value"].tolist()
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    (info,) = manifest["training"].values()
    assert "in train mode" in info["put_in_eval_mode"] and "bn" in info["put_in_eval_mode"]
    (info,) = json.loads((tmp_path / "eval" / "manifest.json").read_text())["training"].values()
    assert "put_in_eval_mode" not in info


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (
            "random",
            r"is random in eval mode .* scored only with --score-repeats 2 or more .*fgsm:eot=10 in place of fgsm",
        ),
        ("self-editing", r"changes its own tensors in forward \(buffer"),
    ],
)
def test_a_model_random_or_self_editing_in_eval_mode_is_refused_before_any_cell(tmp_path, mode, message):
    with pytest.raises(SpecError, match=message):
        _evaluate(BNNet(mode), tmp_path / "run", attacks=("fgsm",))
    assert not (tmp_path / "run" / "results.csv").exists()
