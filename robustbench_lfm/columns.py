"""Every column of the run's CSV tables, declared once.

`RESULTS` declares `results.csv` (and `probes.csv`, same columns): each `Column` has its name,
its dtype, its role in a number's identity (robustbench_lfm.identity derives its key tuples from
the roles), the value a table written before the column existed implies, and the line
`results/README.md` shows for it. `CMC`, `queries()` and `MEMBERS` declare `cmc.csv`,
`queries.csv` (its outcome columns come from the metric table) and `members.csv` (each member's
per-query outcome in an ensemble cell, auto-reid).

Tables are read by header name (robustbench_lfm.store): a column this version declares but an
older file lacks takes its `older` value (a constant, or a function of the row for a value that
depends on another column); a declared column with no `older` value missing from a file, and a
column this version does not declare, make the file unreadable in one line naming the column.
Every results row records `SCHEMA`, the version of these declarations it was written under
(tables from before it imply 1). Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from robustbench_lfm import metric_table

Older = str | Callable[[Mapping[str, str]], str] | None

# 1: the tables before schema was recorded (any header since lfm-bench 0.1.0 that has
#    data_params, recipe_key and attack_params); 2: `code` and `schema` added; 3: `projected`;
#    4: `score_repeats` and `score_sd`.
SCHEMA = 4

# The roles of a column in a number's identity (robustbench_lfm.identity): run, model, seed,
# attack, schedule and rerank make up the measurement's identity; metric names the number;
# record columns say what came out and where (not part of any key, nor of the gate's).
ROLES = ("run", "model", "seed", "attack", "schedule", "rerank", "metric", "record")


@dataclass(frozen=True)
class Column:
    """One CSV column.

    Attributes:
        name: the header name.
        dtype: "text", "int", "float" or "bool" (how keys compare it: robustbench_lfm.identity).
        role: one of ROLES.
        older: the value a table written before this column implies for it (a constant, or a
            function of the row's other, already-filled columns); None: no older value can be
            implied, so a table lacking the column is refused.
        doc: its line in results/README.md (Markdown).
        empty: whether some rows leave it empty (every other column is filled on every row).
        older_doc: `older` in words, when it is a function.
    """

    name: str
    dtype: str
    role: str
    older: Older
    doc: str
    empty: bool = False
    older_doc: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES or self.dtype not in ("text", "int", "float", "bool"):
            raise ValueError(f"column {self.name}: role {self.role!r} / dtype {self.dtype!r} unknown")

    def implied(self, row: Mapping[str, str]) -> str:
        """The value an older table that lacks this column implies for `row`."""
        if self.older is None:
            raise KeyError(self.name)
        return self.older if isinstance(self.older, str) else self.older(row)


def _attacked_fp32(row: Mapping[str, str]) -> str:
    return "" if row.get("attack") == "none" else "fp32"


RESULTS: tuple[Column, ...] = (
    Column("run_id", "text", "record", None, "the run directory's name"),
    Column("cell_id", "text", "record", None,
           "12-hex hash of what determines the cell's numbers (training key, attack and every resolved option, "
           "eps, evaluation options, a probe's reference budget, lfm-bench version, and `code`); with "
           "`--rerank both` a cell has rows for both `rerank` values"),
    Column("task", "text", "run", None, "`reid` or `classification`"),
    Column("dataset", "text", "run", None,
           "dataset registry name: `synthreid`, `market1501`, `dukemtmc`, `synthcls`, `digits`, `cifar10`"),
    Column("data_params", "text", "run", None,
           "JSON of every resolved option of the dataset (its config with defaults filled in: `{\"seed\": 0, "
           "\"train_ids\": 120, ...}`; a folder dataset's `height` and `width`); ranges are lists"),
    Column("test_dataset", "text", "run", lambda row: row["dataset"],
           "the dataset scored: `dataset` itself, or the `--test-dataset` name (trained on `dataset`, scored on "
           "another: generalization across domains)", older_doc="`dataset`"),
    Column("test_data_params", "text", "run", lambda row: row["data_params"],
           "JSON of the scored dataset's resolved options (`data_params` when it is the training dataset); "
           "synthreid's `domain` appears only when not `a`", older_doc="`data_params`"),
    Column("train_fraction", "text", "run", "",
           "empty when models trained on the whole training split; `0.1 images` (10% of every identity's or "
           "class's images) or `0.1 ids` (10% of the re-ID identities, all their images) with `--train-fraction` "
           "/ `--train-by`: a fixed draw seeded with 0", empty=True),
    Column("model", "text", "model", None,
           "model registry name, with overrides: `lfm` or `lfm:p=0.3,at=layer1`; a `ckpt:` model `ckpt:ARCH@sha8`; "
           "an `evaluate()` model the name given"),
    Column("backbone", "text", "model", None,
           "backbone registry name (`resnet-mini`, `resnet18`, `resnet50`, ...); `external` for an `evaluate()` "
           "model"),
    Column("regularizer", "text", "model", None,
           "regularizer module name (`lfm`, `dropout`, ...); for training methods and architecture changes the "
           "model's name (`gwi`, `pgd-at`, `mixacm`, `rcm-up`, `rcm-stride`); `none` for `plain`"),
    Column("model_params", "text", "model", None,
           "JSON of every resolved parameter: the registry defaults, the recipe's `[methods.NAME]` overrides, then "
           "the user's (`{}` for `plain`); area ranges are lists. A `ckpt:` model's are its architecture's plus "
           "`layout` (`lfm-bench`, `torchreid`, `fast-reid`), `strides`, `stem` and `weights_sha256`; an "
           "`evaluate()` model's `{\"weights_sha256\": ...}` (its tensors')"),
    Column("pretrained_sha256", "text", "model", "",
           "sha256 of the `--pretrained` file the backbone was initialised from (a torchvision-layout ResNet "
           "state dict); empty = random initialisation. Part of the checkpoint key", empty=True),
    Column("recipe_key", "text", "run", None,
           "12-hex hash of the resolved training recipe (every field but its file name: two copies of one "
           "recipe share it); `manifest.json` holds the recipe itself"),
    Column("train_seed", "int", "seed", None, "training seed (also seeds the attack's random start)"),
    Column("attack", "text", "attack", None, "attack registry name; `none` for the clean cell"),
    Column("attack_label", "text", "record", None,
           "the attack as tables name it: its name and its non-default options, `pgd:steps=1`, "
           "`sma:side=gallery`, a step size on the 1/255 grid as a level, `pgd:step_size=2/255` (tables read "
           "an older row's `0.00784313725490196` alike); `none` for the clean cell (display only; the identity "
           "is `attack_params`)"),
    Column("attack_params", "text", "attack", None,
           "JSON of every resolved option of the attack (its constructor's defaults, then the user's: "
           "`{\"steps\": 1, \"step_size\": null, ...}`; `null` = the attack's eps-dependent default, whose value "
           "at this eps is in `steps` / `step_size`); options added later are left out at their defaults "
           "(`di_prob`, `di_scale`, `ti_kernel`), so earlier rows keep their ids; a corruption's `{\"type\": ..., "
           "\"side\": ..., \"table\": ..., \"source\": ...}` (its severity is `severity`); `{}` for the clean cell"),
    Column("objective", "text", "attack", None,
           "what the attack maximizes: re-ID `sma` (self-metric), `fna` (furthest negative), `bai` (push from "
           "same-identity queries), `odfa` (pull towards the negated embedding); classification `ce`, `dlr`, `cw`, "
           "`margin` (Square), `deepfool`, `ensemble` (AutoAttack); empty when clean", empty=True),
    Column("norm", "text", "attack", None,
           "`linf` or `l2` (eps is then the L2 norm of one image's perturbation); empty when clean", empty=True),
    Column("eps", "float", "schedule", None,
           "budget as a float on the [0, 1] pixel scale (8/255 = 0.0313725...); 0 when clean and for the "
           "corruptions (no budget)"),
    Column("severity", "int", "schedule", "0",
           "a common corruption's severity, 1-5 (`--attacks corrupt`; its type and other options are in "
           "`attack_params`); 0 for every other row"),
    Column("steps", "int", "schedule", None,
           "attack iterations actually run, all restarts included (queries for `square`, 0 for `autoattack` and "
           "when clean); in `probes.csv` the large-eps probe's scaled schedule"),
    Column("step_size", "float", "schedule", None,
           "absolute step on the pixel scale actually run (APGD: its initial step 2 eps; CW: Adam's lr; 0 when "
           "clean or not applicable)"),
    Column("projected", "float", "record", "",
           "the largest change (pixel scale) the final projection onto the budget and [0, 1] made to the attack's "
           "output: about 0 for a search that keeps its budget itself (more than rounding fails the sanity check "
           "`in-budget`: a bug made visible); a minimum-norm attack's (CW, DeepFool) distance to the ball; empty "
           "when clean, for the corruptions and for transferred images read back from the cache", empty=True),
    Column("perturbed", "text", "attack", None,
           "which side was attacked: `query` or `gallery` (re-ID), `input` (classification); a corruption may "
           "also be `both` (query and gallery, Market-1501-C's default); empty when clean", empty=True),
    Column("surrogate", "text", "attack", None,
           "model the adversarial images were crafted on (`--surrogate`, transfer setting); empty = white-box",
           empty=True),
    Column("quantize", "bool", "attack", None,
           "`True` when adversarial images were rounded to 8 bits before evaluation (`--quantize`)"),
    Column("distance", "text", "run", None, "retrieval distance: `cosine` (default, 1 - cos) or `euclidean` "
           "(squared L2)"),
    Column("ap", "text", "run", None,
           "AP formula: `plain` (torchreid, fast-reid: non-interpolated) or `trapezoid` (official Market-1501 "
           "script; lower)"),
    Column("flip", "bool", "run", None,
           "`True` when the embedding is the mean of the image's and its mirror's (attacks see the same model)"),
    Column("precision", "text", "run", "fp32",
           "`fp32`, or `bf16` when feature extraction ran under bfloat16 autocast (`--precision bf16`); how "
           "the model was trained is the recipe's (`recipe_key`: the CPU re-ID recipe trains in bf16)"),
    Column("attack_precision", "text", "attack", _attacked_fp32,
           "`fp32` (default) or `bf16` (`--attack-precision`): the precision the attack's passes ran in; empty "
           "when clean", empty=True, older_doc="`fp32`, empty when clean"),
    Column("rerank", "text", "rerank", None,
           "empty = plain ranking; `k1=20,k2=6,lambda=0.3` = k-reciprocal re-ranking (Zhong et al. 2017)",
           empty=True),
    Column("metric", "text", "metric", None,
           "re-ID: `rank1`, `rank5`, `rank10`, `mAP`, `mINP` (Market-1501 protocol: same-id same-camera gallery "
           "items removed, queries with no match skipped); classification: `accuracy`"),
    Column("value", "float", "record", None, "the metric as a fraction in [0, 1] (reports render %)"),
    Column("n_eval", "int", "record", None,
           "number of queries attacked and ranked (queries with no valid match are then skipped by the metric), "
           "or of test images classified"),
    Column("score_repeats", "int", "run", "1",
           "scoring passes averaged into `value` (`--score-repeats`): 1 for a deterministic model; more for a "
           "model random in eval mode, each pass a fresh forward of the same clean and adversarial images"),
    Column("score_sd", "float", "record", "",
           "standard deviation of the metric over the scoring passes (n - 1 denominator): how much the "
           "model's own randomness moves the number; empty when `score_repeats` is 1", empty=True),
    Column("eval_subset", "text", "run", "",
           "empty when every query (test image) was scored; `N/M` when `--n-eval N` scored a fixed subset of N of "
           "the M (the first N of one permutation seeded with 0, the same for every model and seed; the gallery "
           "stays whole)", empty=True),
    Column("wall_s", "float", "record", None,
           "seconds the cell took (attack + evaluation; an attack run two cells of one model share, an ensemble's "
           "member that the grid also runs alone, counts in the cell that crafted it)"),
    Column("checkpoint_sha256", "text", "record", None,
           "sha256 of the safetensors checkpoint evaluated (a `ckpt:` file's sha256; for `evaluate()`, the "
           "model's tensors')"),
    Column("code", "text", "record", "",
           "16-hex identity of the code that computed the number: the built-in modules that train, attack and "
           "score it and the plugins it comes from, comments and docstrings aside (docs/evaluation.md: Code "
           "identity). Part of `cell_id`, so an edit recomputes; not part of the gate's key", empty=True),
    Column("lfm_bench_version", "text", "record", None, "lfm-bench version that produced the row"),
    Column("torch_version", "text", "record", None, "torch version that produced the row"),
    Column("git_sha", "text", "record", None,
           "the checkout's commit, when run from a git checkout (a working tree with edits shows in `code`, "
           "not here)", empty=True),
    Column("created_at", "text", "record", None, "UTC timestamp"),
    Column("schema", "int", "record", "1", f"the version of these columns the row was written under ({SCHEMA})"),
)  # fmt: skip


CMC: tuple[Column, ...] = (
    Column("cell_id", "text", "record", None, "the cell (`results.csv`)"),
    Column("model", "text", "model", None, "the model label"),
    Column("attack", "text", "attack", None, "the attack"),
    Column("eps", "float", "schedule", None, "the budget"),
    Column("train_seed", "int", "seed", None, "the training seed"),
    Column("rerank", "text", "rerank", None, "the re-ranking mode", empty=True),
    Column("rank", "int", "record", None, "rank k, from 1"),
    Column("cmc", "float", "record", None, "the share of queries with a match within the first k"),
)  # fmt: skip


MEMBERS: tuple[Column, ...] = (
    Column("cell_id", "text", "record", None, "the ensemble's cell (`results.csv`)"),
    Column("rerank", "text", "rerank", None, "the re-ranking mode", empty=True),
    Column("member", "text", "record", None, "the member attack, by its label (`sma:geometry=cosine`)"),
    Column("query", "int", "record", None, "0-based index in the query split"),
    Column("first_match", "int", "record", None, "the rank of the query's first true match under this member"),
    Column("ap", "float", "record", None, "the query's AP under this member"),
)  # fmt: skip


def queries() -> tuple[Column, ...]:
    """`queries.csv`: the cell, its re-ranking mode, the query's index, then one column per
    per-query outcome of the metric table (registered metrics add theirs; an older table lacking
    one leaves it empty)."""
    head = (
        Column("cell_id", "text", "record", None, "the cell (`results.csv`)"),
        Column("rerank", "text", "rerank", None, "the re-ranking mode", empty=True),
        Column("query", "int", "record", None, "0-based index in the query or test split"),
    )
    outcome = tuple(
        Column(name, "float", "record", "", "a per-query outcome of the metric table", empty=True)
        for name in metric_table.query_columns()
    )
    return head + outcome


def row(declared: tuple[Column, ...], values: dict[str, object]) -> dict[str, object]:
    """A table row from `values`, which must give every declared column and nothing else."""
    header = names(declared)
    missing, extra = set(header) - set(values), set(values) - set(header)
    if missing or extra:
        raise ValueError(f"a row must fill exactly the declared columns: missing {sorted(missing)}, "
                         f"undeclared {sorted(extra)}")  # fmt: skip
    return {name: values[name] for name in header}


def names(columns: tuple[Column, ...]) -> tuple[str, ...]:
    """The header of a table."""
    return tuple(c.name for c in columns)


def of_role(*roles: str) -> tuple[str, ...]:
    """The results columns of `roles`, in table order."""
    return tuple(c.name for c in RESULTS if c.role in roles)


def markdown_table() -> str:
    """The `results.csv` column table of results/README.md (a test keeps the file equal to it)."""
    lines = ["| column | meaning | older tables |", "| --- | --- | --- |"]
    for c in RESULTS:
        older = "refused" if c.older is None else c.older_doc or (f"`{c.older}`" if c.older else "empty")
        lines.append(f"| `{c.name}` | {c.doc} | {older} |")
    return "\n".join(lines) + "\n"
