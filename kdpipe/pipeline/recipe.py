"""A recipe: ``pipelines/<name>/pipeline.yaml`` read and validated into stages.

Schema (docs/recipes.md has the whole of it)::

    name: rnn_to_dnn
    title: Transferring knowledge from a RNN to a DNN
    paper: Chan, Lane and Lane 2015
    claim: the student's error drops by about 13% relative
    vars: {utts: 800, seeds: [0, 1, 2]}      # the full size
    sizes: {small: {utts: 60, seeds: [0]}}   # overrides per --size
    regimes: {aligned: {labels: aligned}}   # overrides per --regime (before the size's)
    stages:
      - {name: corpus, synth: {task: phones, num_utts: "${utts}"}}
      - {name: feats, prepare: {corpus: corpus}}
      - {name: teacher, learn: {corpus: feats, config: teacher.yaml}}
      - {name: targets, teach: {corpus: feats, model: teacher, rule: {name: topk, params: {k: 8}}}}
      - {name: student, learn: {corpus: feats, config: student.yaml, targets: [targets],
                                seeds: true}}
    results:
      rows: [{label: BLSTM teacher, stage: teacher}, {label: DNN student, stage: student}]
      claims: [{text: KD helps, better: student, than: student_hard}]

Stages name the stages they read from (``corpus``, ``model``, ``targets``, ``init``...); a
stage is *seeded* (run once per seed) when it says ``seeds: true`` or reads a seeded stage,
and then reads that stage's output of the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdpipe.errors import ConfigError
from kdpipe.pipeline.template import expand, substitute
from kdpipe.schema import load_yaml

RECIPE_FILE = "pipeline.yaml"
KINDS = ("synth", "align", "prepare", "learn", "teach", "eval")
TOP_KEYS = {
    "name", "title", "paper", "claim", "notes", "vars", "sizes", "regimes", "stages", "results",
}  # fmt: skip
STAGE_KEYS = {"name", "when"}  # besides the kind: ``when: BOOL`` keeps or drops the stage
# Options of each stage kind, and which of them name other stages.
OPTIONS: dict[str, set[str]] = {
    "synth": {"task", "size", "jobs"},  # + any field of the task's synth config
    "align": {"corpus", "config", "num_leaves", "lexicon", "g2p", "jobs", "skip_bad"},
    "prepare": {"corpus", "features", "jobs", "skip_bad"},
    "learn": {"corpus", "config", "student", "model", "train", "kd", "targets", "init"}
    | {"view", "train_split", "dev_split", "seeds", "eval", "loss", "ctc"},
    "teach": {"corpus", "model", "members", "ensemble", "split", "batch_frames"},
    "eval": {"corpus", "model", "split", "view", "decode", "truth"},
}
REFS = {
    "align": ("corpus",),
    "prepare": ("corpus",),
    "learn": ("corpus", "init"),
    "teach": ("corpus", "model"),
    "eval": ("corpus", "model", "truth"),
}


@dataclass(frozen=True)
class Stage:
    """One step of a recipe, variables substituted."""

    name: str
    kind: str  # synth | align | prepare | learn | teach | eval
    options: dict[str, Any]
    refs: tuple[str, ...]  # the stages it reads, in the order named
    seeded: bool  # run once per seed


@dataclass(frozen=True)
class Recipe:
    """A validated recipe at one size (and regime)."""

    directory: Path
    name: str
    title: str
    paper: str
    claim: str
    size: str
    vars: dict[str, Any]
    seeds: tuple[int, ...]
    stages: tuple[Stage, ...]
    rows: tuple[dict[str, Any], ...] = ()
    claims: tuple[dict[str, Any], ...] = ()
    notes: str = ""
    regime: str = ""  # "": the recipe's own variables
    by_name: dict[str, Stage] = field(default_factory=dict, compare=False)

    def stage(self, name: str) -> Stage:
        return self.by_name[name]


def load_recipe(
    path: str | Path, size: str = "full", seeds: list[int] | None = None, regime: str = ""
) -> Recipe:
    """Read ``path`` (a recipe folder or its pipeline.yaml) at ``size`` ("full" or a key of
    ``sizes``) in ``regime`` ("" or a key of ``regimes``: variables set before the size's,
    e.g. the papers' labels instead of the synthetic truth); ``seeds`` replaces the
    recipe's ``seeds`` variable."""
    given = Path(path)
    file = given / RECIPE_FILE if given.is_dir() else given
    if not file.is_file():
        raise ConfigError(f"no recipe at {path}: expected a folder holding {RECIPE_FILE}")
    data = load_yaml(file)
    where = str(file)
    if not isinstance(data, dict) or set(data) - TOP_KEYS:
        extra = sorted(set(data) - TOP_KEYS) if isinstance(data, dict) else []
        raise ConfigError(f"{where}: expected a mapping with keys {sorted(TOP_KEYS)}; got {extra}")
    env = dict(data.get("vars") or {})
    env.setdefault("seeds", [0])
    sizes = data.get("sizes") or {}
    for name, values in sizes.items():  # every size, not just this one: typos show early
        unknown = set(values or {}) - set(env)
        if unknown:
            raise ConfigError(f"{where}: size {name} sets undeclared vars {sorted(unknown)}")
    regimes = data.get("regimes") or {}
    for name, values in regimes.items():
        unknown = set(values or {}) - set(env)
        if unknown:
            raise ConfigError(f"{where}: regime {name} sets undeclared vars {sorted(unknown)}")
    if regime:
        if regime not in regimes:
            known = ", ".join(regimes) or "none"
            raise ConfigError(f"{where}: no regime {regime!r}; regimes: {known}")
        env.update(regimes[regime] or {})
    if size != "full":
        if size not in sizes:
            raise ConfigError(f"{where}: no size {size!r}; sizes: full, {', '.join(sizes)}")
        env.update(sizes[size] or {})
    if seeds is not None:
        env["seeds"] = list(seeds)
    env["size"] = size
    seed_list = env["seeds"]
    if not isinstance(seed_list, list) or not all(isinstance(seed, int) for seed in seed_list):
        raise ConfigError(f"{where}: seeds must be a list of integers, got {seed_list!r}")
    stages = _stages(expand(data.get("stages"), env, "stages", f"{where}: stages"), where)
    results = data.get("results") or {}
    if not isinstance(results, dict) or set(results) - {"rows", "claims"}:
        raise ConfigError(f"{where}: results must be a mapping with keys rows, claims")
    rows = expand(results.get("rows"), env, "rows", f"{where}: results.rows")
    claims = expand(results.get("claims"), env, "claims", f"{where}: results.claims")
    by_name = {stage.name: stage for stage in stages}
    _check_results(rows, claims, by_name, where)
    return Recipe(
        directory=file.parent.resolve(),
        name=str(data.get("name") or file.parent.name),
        title=str(substitute(data.get("title", ""), env, "title")),
        paper=str(data.get("paper", "")),
        claim=str(data.get("claim", "")),
        size=size,
        regime=regime,
        vars=env,
        seeds=tuple(seed_list),
        stages=tuple(stages),
        rows=tuple(rows),
        claims=tuple(claims),
        notes=str(data.get("notes", "")),
        by_name=by_name,
    )


def _stages(items: list[Any], where: str) -> list[Stage]:
    out: list[Stage] = []
    seen: dict[str, Stage] = {}
    for i, item in enumerate(items):
        here = f"{where}: stage {i}"
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{here}: a stage is a mapping with a name and one of {KINDS}")
        name = str(item["name"])
        here = f"{where}: stage {name!r}"
        kinds = [key for key in item if key in KINDS]
        if len(kinds) != 1 or set(item) - {*STAGE_KEYS, *KINDS}:
            raise ConfigError(f"{here}: needs exactly one of {', '.join(KINDS)} (and name)")
        keep = item.get("when", True)
        if not isinstance(keep, bool):
            raise ConfigError(f"{here}: when must be true or false (a variable), got {keep!r}")
        if not keep:
            continue  # this size or regime leaves it out
        if name in seen:
            raise ConfigError(f"{here}: a stage of that name comes earlier")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{here}: names are letters, digits, '_' and '-'")
        kind = kinds[0]
        opts = item[kind] or {}
        if not isinstance(opts, dict):
            raise ConfigError(f"{here}: {kind} options must be a mapping")
        unknown = set(opts) - OPTIONS[kind]
        if unknown and kind != "synth":  # synth: the config class checks its own fields
            raise ConfigError(
                f"{here}: unknown {kind} option(s) {sorted(unknown)}; "
                f"known: {', '.join(sorted(OPTIONS[kind]))}"
            )
        refs = _refs(kind, opts, here)
        for ref in refs:
            if ref not in seen:
                raise ConfigError(f"{here}: reads stage {ref!r}, which is not defined before it")
        seeded = bool(opts.get("seeds", False)) or any(seen[ref].seeded for ref in refs)
        stage = Stage(name, kind, dict(opts), tuple(refs), seeded)
        seen[name] = stage
        out.append(stage)
    if not out:
        raise ConfigError(f"{where}: no stages")
    return out


def _refs(kind: str, opts: dict[str, Any], where: str) -> list[str]:
    refs = [str(opts[key]) for key in REFS.get(kind, ()) if opts.get(key) is not None]
    if kind != "synth" and "corpus" not in opts:
        raise ConfigError(f"{where}: missing option 'corpus' (the stage that made it)")
    if kind == "learn":
        for target in opts.get("targets") or []:
            refs.append(str(target["stage"] if isinstance(target, dict) else target))
        evaluation = opts.get("eval") or {}
        if isinstance(evaluation, dict) and evaluation.get("truth") is not None:
            refs.append(str(evaluation["truth"]))  # the synth stage that kept the true phones
    if kind == "eval" and "model" not in opts:
        raise ConfigError(f"{where}: eval needs model: STAGE (a learn stage)")
    if kind == "teach":
        given = [key for key in ("model", "members") if key in opts]
        if len(given) != 1:
            raise ConfigError(f"{where}: teach needs model (one stage) or members (a list)")
        for member in opts.get("members") or []:
            if not isinstance(member, dict) or "model" not in member:
                raise ConfigError(f"{where}: each member is a mapping with model: STAGE")
            refs.append(str(member["model"]))
    return list(dict.fromkeys(refs))


def _check_results(rows: list, claims: list, stages: dict[str, Stage], where: str) -> None:
    for row in rows:
        if not isinstance(row, dict) or "stage" not in row or "label" not in row:
            raise ConfigError(f"{where}: a results row is a mapping with label and stage: {row!r}")
        if set(row) - {"label", "stage", "store"}:
            raise ConfigError(f"{where}: results row keys are label, stage, store: {row!r}")
        for key in ("stage", "store"):
            if key in row and row[key] not in stages:
                raise ConfigError(f"{where}: results row names unknown stage {row[key]!r}")
    for claim in claims:
        if not isinstance(claim, dict) or set(claim) != {"text", "better", "than"}:
            raise ConfigError(f"{where}: a claim is a mapping with text, better, than: {claim!r}")
        for key in ("better", "than"):
            if claim[key] not in stages:
                raise ConfigError(f"{where}: claim names unknown stage {claim[key]!r}")
