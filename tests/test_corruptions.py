"""The common corruptions (issue 17, part 1): the 15 types against the reference package, the
`corrupt` threat family from the command line to the CSV, the report and the gate, mCE, and the
published CIFAR-10-C reader."""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from robustbench_lfm.attacks.corruptions import CORRUPTIONS, corrupt
from robustbench_lfm.cli import main
from robustbench_lfm.datasets.classification import CIFAR_FILES
from robustbench_lfm.datasets.synthreid import SynthReIDConfig, generate
from robustbench_lfm.report.corruption import mce
from robustbench_lfm.spec import SpecError, resolve_attacks
from tests.conftest import TINY_CLI

DETERMINISTIC = ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate")


def _reference():
    """imagecorruptions 1.1.2 (Michaelis et al.), shimmed for what has since left its dependencies:
    pkg_resources (setuptools), numpy's float_, skimage's `multichannel` keyword."""
    if importlib.util.find_spec("imagecorruptions") is None:
        pytest.skip("the reference package imagecorruptions is not installed")
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda pkg, rel: os.path.join(os.path.dirname(sys.modules[pkg].__file__), rel)
        sys.modules["pkg_resources"] = shim
    np.float_ = np.float64
    import imagecorruptions.corruptions as reference
    import skimage.filters

    gaussian = skimage.filters.gaussian
    reference.gaussian = lambda x, sigma=1, multichannel=None, **kw: gaussian(
        x, sigma=sigma, channel_axis=-1 if multichannel else None, **kw
    )
    from imagecorruptions import corrupt as reference_corrupt

    return reference_corrupt


@pytest.fixture(scope="module")
def images():
    data = generate(SynthReIDConfig(train_ids=30, test_ids=4, distractor_ids=0, cameras=3, max_cameras=3))
    return data.train.images[:64]


def _theirs(reference_corrupt, x8, name, severity):
    np.random.seed(0)
    out = [reference_corrupt(im.permute(1, 2, 0).numpy(), corruption_name=name, severity=severity) for im in x8]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_matches_the_reference_package(name, images):
    """Deterministic corruptions within one 8-bit level per pixel (JPEG: libjpeg's integer DCT may
    round a coefficient the other way, so on average); random ones in the mean brightness and the
    mean size of the change per image, paired over 64 images, within 4 standard errors
    (frost: the procedural layer stands in for the reference's photographs, matched to them)."""
    reference_corrupt = _reference()
    x = images.float() / 255
    for severity in (1, 3, 5):
        theirs = _theirs(reference_corrupt, images, name, severity)
        ours = corrupt(x, name, severity, "imagenet", torch.Generator().manual_seed(0))
        where = f"{name} severity {severity}"
        if name in DETERMINISTIC:
            assert float((ours - theirs).abs().max()) <= 1 / 255 + 1e-6, where
        elif name == "jpeg_compression":
            assert float((ours - theirs).abs().mean()) <= 1.5 / 255, where
        else:  # per image: its mean, and the mean size of the change; paired over the same images
            for stat in (lambda y: y.mean(dim=(1, 2, 3)), lambda y: (y - x).abs().mean(dim=(1, 2, 3))):
                d = stat(ours) - stat(theirs)
                assert abs(float(d.mean())) <= 4 * float(d.std()) / len(d) ** 0.5 + 0.002, where


def test_the_cifar_tables_pillow_steps_match_pillow(images):
    """CIFAR-10-C's pixelate (BOX down and up) and JPEG at its qualities, against Pillow itself."""
    x8 = generate(SynthReIDConfig(height=32, width=32, train_ids=4, test_ids=2, distractor_ids=0)).train.images[:16]
    x = x8.float() / 255
    cifar = {"pixelate": (0.95, 0.9, 0.85, 0.75, 0.65), "jpeg_compression": (80, 65, 58, 50, 40)}  # make_cifar_c.py
    for severity, (factor, quality) in enumerate(zip(*cifar.values(), strict=True), 1):
        pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in x8]
        pixelated = [np.array(p.resize((int(32 * factor),) * 2, Image.BOX).resize((32, 32), Image.BOX)) for p in pil]
        ours = corrupt(x, "pixelate", severity, "cifar", torch.Generator())
        assert float((ours - torch.from_numpy(np.stack(pixelated)).permute(0, 3, 1, 2) / 255).abs().max()) <= 1.01 / 255
        buffers = [io.BytesIO() for _ in pil]
        for p, b in zip(pil, buffers, strict=True):
            p.save(b, "JPEG", quality=quality)
        jpegs = torch.from_numpy(np.stack([np.array(Image.open(b)) for b in buffers])).permute(0, 3, 1, 2) / 255
        assert (
            float((corrupt(x, "jpeg_compression", severity, "cifar", torch.Generator()) - jpegs).abs().mean()) < 2 / 255
        )


def test_every_corruption_changes_the_images_more_at_higher_severity(images):
    """Severity 5 moves the images further than severity 1, except CIFAR-10-C's elastic transform,
    whose table gives severity 1 the largest affine jitter (2.6 pixels against 1)."""
    x = images[:8].float() / 255
    for table in ("imagenet", "cifar"):
        for name in (n for n in CORRUPTIONS if (n, table) != ("elastic_transform", "cifar")):
            outs = [corrupt(x, name, s, table, torch.Generator().manual_seed(1)) for s in (1, 5)]
            assert all(o.shape == x.shape and float(o.min()) >= 0 and float(o.max()) <= 1 for o in outs)
            assert torch.equal(outs[0] * 255, torch.round(outs[0] * 255)), f"{name}: not on the 8-bit grid"
            assert float((outs[1] - x).abs().mean()) > float((outs[0] - x).abs().mean()), f"{name} ({table})"


def test_corrupt_items_expand_to_types_and_severities():
    assert len(resolve_attacks("corrupt", "reid")) == 75
    at_three = resolve_attacks("corrupt:severity=3", "classification")
    assert len(at_three) == 15 and {dict(a.options)["table"] for a in at_three} == {"cifar"}
    assert len(resolve_attacks("corrupt:type=blur", "reid")) == 20
    (one,) = resolve_attacks("corrupt:type=fog,severity=2", "reid")
    assert one.label_on("reid") == "corrupt:type=fog" and "severity" not in one.params_json()
    assert one.label_on("classification") == "corrupt:table=imagenet,type=fog"  # not the task's own table


@pytest.mark.parametrize(
    ("item", "message"),
    [("corrupt:type=rain", "type='rain' is not one of gaussian_noise"), ("corrupt:severity=6", "from 1 to 5"),
     ("corrupt:severity=0", "from 1 to 5"), ("corrupt:severity=2.5", "from 1 to 5"),
     ("corrupt:side=left", "side='left'"), ("corrupt:table=svhn", "table='svhn'"), ("corrupt:seed=1", "seed")],
)  # fmt: skip
def test_a_bad_corruption_is_one_line_and_exit_2(item, message, tmp_path):
    with pytest.raises(SpecError, match=message):
        resolve_attacks(item, "reid")
    result = CliRunner().invoke(main, ["run", "--attacks", item, "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and result.output.startswith("lfm-bench: error:")


@pytest.fixture(scope="module")
def reid_run(tmp_path_factory):
    out, cache = tmp_path_factory.mktemp("corrupt") / "run", tmp_path_factory.mktemp("cache")
    args = ["run", "--models", "plain", "--no-baseline", "--dataset", TINY_CLI, "--epochs", "1", "--eps", "8/255", "-q",
            "--attacks", "corrupt:type=fog,severity=1,corrupt:type=fog,severity=2,"
            "corrupt:type=fog,severity=2,side=query,pgd", "--out", str(out), "--cache-dir", str(cache)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out, args, result.output


def test_severity_reaches_the_csv_apart_from_eps_and_options(reid_run):
    out, _, printed = reid_run
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    fog = df[(df["attack"] == "corrupt") & (df["metric"] == "rank1")]
    assert sorted(zip(fog["severity"], fog["perturbed"], strict=True)) == [(1, "both"), (2, "both"), (2, "query")]
    assert set(fog["eps"]) == {0.0} and fog["cell_id"].nunique() == 3 and set(fog["surrogate"]) == {""}
    assert set(df.loc[df["attack"] != "corrupt", "severity"]) == {0}
    assert all('"severity"' not in p for p in fog["attack_params"])  # its own column, not an option
    probes = pd.read_csv(out / "probes.csv", keep_default_na=False)
    assert "corrupt" not in set(probes["attack"])  # no budget: nothing to probe
    assert "common corruptions" in printed and (out / "corruptions.png").is_file()


def test_a_rerun_resumes_and_the_gate_keeps_severities_apart(reid_run, tmp_path):
    out, args, _ = reid_run
    assert CliRunner().invoke(main, args).exit_code == 0
    manifest = pd.read_json(out / "manifest.json", typ="series")
    assert manifest["cells_run"] == 0
    table = pd.read_csv(out / "results.csv", keep_default_na=False, dtype=str)
    table.loc[table["severity"] == "1", "severity"] = "4"
    table.to_csv(tmp_path / "base.csv", index=False)
    result = CliRunner().invoke(main, ["check", str(out), "--baseline", str(tmp_path / "base.csv")])
    assert result.exit_code == 1 and "MISSING plain seed 0 corrupt:type=fog s4" in result.output


def test_the_report_has_a_corruption_table_and_figure(reid_run):
    out, _, _ = reid_run
    assert CliRunner().invoke(main, ["report", str(out), "-q"]).exit_code == 0
    md = (out / "report" / "report.md").read_text()
    assert "## Common corruptions (severities 1-2)" in md and "### Rank-1, side=query" in md
    assert "fog" in md.split("## Common corruptions")[1] and (out / "report" / "corruptions.pdf").is_file()
    assert "Common corruptions" in (out / "report" / "report.html").read_text()


def test_mce_is_the_error_ratio_to_plain_averaged_over_corruptions():
    rows = []
    for model, errors in (
        ("plain", {"fog": (0.2, 0.4), "snow": (0.5, 0.5)}),
        ("lfm", {"fog": (0.1, 0.2), "snow": (0.5, 1.0)}),
    ):
        for name, (e1, e2) in errors.items():
            for severity, error in ((1, e1), (2, e2)):
                rows.append({"task": "classification", "dataset": "digits", "model": model, "attack": "corrupt",
                             "attack_label": f"corrupt:type={name}", "attack_params": f'{{"type": "{name}"}}',
                             "severity": severity, "eps": 0.0, "metric": "accuracy", "value": 1 - error,
                             "rerank": "", "perturbed": "input", "train_seed": 0})  # fmt: skip
    # fog: (0.1 + 0.2) / (0.2 + 0.4) = 0.5; snow: 1.5 / 1.0 = 1.5; mean 1.0 = 100 %
    assert mce(pd.DataFrame(rows))[("lfm", "")] == pytest.approx(100.0)
    assert mce(pd.DataFrame(rows))[("plain", "")] == pytest.approx(100.0)


def test_mce_sums_errors_over_severities_then_averages_the_ratios_over_corruptions():
    """Three corruptions, three severities, unequal per-severity ratios: Hendrycks & Dietterich's
    mCE (ratio of summed errors per corruption, then the mean) differs from the median of the
    CEs (100), the ratio of all errors (108.3) and the mean of per-severity ratios (117.0)."""
    plain = {"fog": (0.1, 0.2, 0.3), "snow": (0.2, 0.2, 0.4), "frost": (0.5, 0.25, 0.25)}
    lfm = {"fog": (0.1, 0.1, 0.4), "snow": (0.1, 0.3, 0.2), "frost": (0.2, 0.2, 1.0)}
    rows = [
        {"task": "classification", "dataset": "digits", "model": model, "attack": "corrupt",
         "attack_label": f"corrupt:type={name}", "attack_params": f'{{"type": "{name}"}}', "severity": severity,
         "eps": 0.0, "metric": "accuracy", "value": 1 - error, "rerank": "", "perturbed": "input", "train_seed": 0}
        for model, errors in (("plain", plain), ("lfm", lfm))
        for name, by_severity in errors.items()
        for severity, error in enumerate(by_severity, 1)
    ]  # fmt: skip
    # CE: fog 0.6 / 0.6 = 1.0, snow 0.6 / 0.8 = 0.75, frost 1.4 / 1.0 = 1.4; mCE = 3.15 / 3 = 105 %
    assert mce(pd.DataFrame(rows))[("lfm", "")] == pytest.approx(105.0)


def _write_cifar(root, n_test=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in CIFAR_FILES:
        n = n_test if name == "test_batch" else 30
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    test = pickle.loads((folder / "test_batch").read_bytes())
    return test[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.array(test[b"labels"], dtype=np.uint8)


def test_published_cifar10_c_is_read_as_robustbench_lays_it_out(tmp_path):
    """Severity 2's block holds the clean test images: its accuracy is the clean one, for the same
    --n-eval subset; a file with other labels, or no file, is one line and exit 2."""
    clean, labels = _write_cifar(tmp_path / "data")
    published = tmp_path / "data" / "CIFAR-10-C"
    published.mkdir()
    noise = np.random.default_rng(1).integers(0, 256, clean.shape, dtype=np.uint8)
    np.save(published / "fog.npy", np.concatenate([noise, clean, noise, noise, noise]))
    np.save(published / "labels.npy", np.tile(labels, 5))
    args = ["run", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"), "--models", "plain", "--epochs", "1",
            "--n-eval", "12", "-q", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
            "--attacks"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "corrupt:type=fog,severity=2,source=published"])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(tmp_path / "run" / "results.csv", keep_default_na=False)
    accuracy = df.set_index("attack")["value"]
    assert accuracy["corrupt"] == accuracy["none"] and set(df["n_eval"]) == {12}
    assert CliRunner().invoke(main, [*args, "pgd"]).exit_code == 0  # cells that read no published file join
    assert '"source":"published"' in df.loc[df["attack"] == "corrupt", "attack_params"].iloc[0]
    np.save(published / "fog.npy", np.concatenate([noise, clean, noise, noise, clean]))  # the files change
    result = CliRunner().invoke(main, [*args, "corrupt:type=fog,severity=2,source=published"])
    assert result.exit_code == 2 and "measures another published_corruptions" in result.output
    args[args.index(str(tmp_path / "run"))] = str(tmp_path / "run2")
    np.save(published / "labels.npy", np.tile((labels + 1) % 10, 5))
    result = CliRunner().invoke(main, [*args, "corrupt:type=fog,severity=3,source=published"])
    assert result.exit_code == 2 and "labels are not cifar10's test labels" in result.output
    result = CliRunner().invoke(main, [*args, "corrupt:type=snow,severity=3,source=published"])
    assert result.exit_code == 2 and "snow.npy" in result.output and result.output.count("\n") == 1
    result = CliRunner().invoke(
        main, ["run", "--attacks", "corrupt:source=published", "-q", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "only cifar10 has" in result.output


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncated", "is not a numpy array file"),
        ("shape", "has dtype uint8 and shape"),
        ("dtype", "has dtype float32"),
        ("labels", "holds"),
    ],
)
def test_a_damaged_published_cifar10_c_folder_is_one_error_line(tmp_path, damage, expected):
    clean, labels = _write_cifar(tmp_path / "data")
    published = tmp_path / "data" / "CIFAR-10-C"
    published.mkdir()
    images = np.concatenate([clean] * 5)
    np.save(published / "fog.npy", images)
    np.save(published / "labels.npy", np.tile(labels, 5))
    if damage == "truncated":
        data = (published / "fog.npy").read_bytes()
        (published / "fog.npy").write_bytes(data[: len(data) // 2])
    elif damage == "shape":
        np.save(published / "fog.npy", images[..., :1])
    elif damage == "dtype":
        np.save(published / "fog.npy", images.astype(np.float32))
    else:
        np.save(published / "labels.npy", np.tile(labels, 5)[:-5])
    args = ["run", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"), "--models", "plain", "--epochs", "1",
            "--n-eval", "12", "-q", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
            "--attacks", "corrupt:type=fog,severity=2,source=published"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("lfm-bench: error:") and expected in line


# CIFAR-10-C's parameters as make_cifar_c.py writes them (hendrycks/robustness,
# ImageNet-C/create_c/make_cifar_c.py, commit ca36008), transcribed by hand for this comparison:
# per corruption, the list indexed by severity - 1. elastic_transform's are multiples of IMSIZE
# (32) there, given here as those multiples; zoom_blur's are the np.arange(start, stop, step) calls.
MAKE_CIFAR_C = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [(1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MAKE_CIFAR_C))
def test_the_cifar_table_is_make_cifar_c_s_parameter_by_parameter(name):
    from robustbench_lfm.attacks.corruptions import CORRUPTIONS, PARAMS

    assert set(MAKE_CIFAR_C) == set(CORRUPTIONS)  # the 15 of CIFAR-10-C, no more, no fewer
    ours, theirs = PARAMS[name]["cifar"], MAKE_CIFAR_C[name]
    assert len(ours) == 5
    for severity, (a, b) in enumerate(zip(ours, theirs, strict=True), 1):
        a, b = np.atleast_1d(np.asarray(a, dtype=float)), np.atleast_1d(np.asarray(b, dtype=float))
        assert a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-12), f"{name} severity {severity}: {a} != {b}"


def _corruption_rows(accuracy: dict[str, list[float]], corruption: str = "fog") -> list[dict]:
    """Classification corruption rows: per model, one accuracy per training seed (severity 3)."""
    return [
        {"task": "classification", "dataset": "digits", "model": model, "attack": "corrupt",
         "attack_label": f"corrupt:type={corruption}", "attack_params": f'{{"type": "{corruption}"}}',
         "severity": 3, "eps": 0.0, "metric": "accuracy", "value": value, "rerank": "", "perturbed": "input",
         "train_seed": seed}
        for model, values in accuracy.items()
        for seed, value in enumerate(values)
    ]  # fmt: skip


def test_the_corruption_tables_bold_a_lead_that_holds_over_the_seeds_only():
    from robustbench_lfm.report.corruption import MCE, corruption_tables

    leads = pd.DataFrame(_corruption_rows({"plain": [0.50, 0.52, 0.51], "lfm": [0.70, 0.71, 0.73]}))
    ((_, table),) = corruption_tables(leads)
    assert table.bold.loc["lfm", "fog"] and table.bold.loc["lfm", "mean"] and not table.bold.loc["plain"].any()
    assert MCE in table.text.columns and not table.bold[MCE].any()  # a ratio to plain's errors: never marked
    one_seed = pd.DataFrame(_corruption_rows({"plain": [0.50], "lfm": [0.90]}))
    ((_, table),) = corruption_tables(one_seed)
    assert not table.bold.to_numpy().any() and "compare trained checkpoints, not methods" in table.legend
    within_spread = pd.DataFrame(_corruption_rows({"plain": [0.50, 0.60, 0.40], "lfm": [0.55, 0.45, 0.62]}))
    ((_, table),) = corruption_tables(within_spread)
    assert not table.bold.to_numpy().any()


def test_the_corruption_table_shows_the_mean_and_mce_before_the_types():
    """report.html's wide corruption table scrolls: the summary columns come first, where the page
    starts (they were the last two, off the page's edge)."""
    from robustbench_lfm.report.corruption import MCE, corruption_tables

    ((_, table),) = corruption_tables(pd.DataFrame(_corruption_rows({"plain": [0.50], "lfm": [0.70]})))
    assert list(table.text.columns[:3]) == ["clean", "mean", MCE] and len(table.text.columns) > 3
