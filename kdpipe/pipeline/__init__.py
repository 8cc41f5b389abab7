"""Recipes: ``pipelines/<name>/pipeline.yaml`` run end to end by ``kdpipe run``.

- ``recipe``: the YAML schema, variables and sizes, stage references, seeded stages;
- ``template``: ``${name}`` substitution and ``foreach`` expansion inside a recipe;
- ``stages``: what each kind of stage (synth, prepare, learn, teach, eval) calls;
- ``runner``: order, fingerprints, skip and resume;
- ``results``: the comparison table and the paper's claims checked (results.md/json).
"""

from kdpipe.pipeline.recipe import Recipe, Stage, load_recipe
from kdpipe.pipeline.results import collect, to_markdown, write_results
from kdpipe.pipeline.runner import Execution, RunReport, plan, run_recipe

__all__ = [
    "Execution",
    "Recipe",
    "RunReport",
    "Stage",
    "collect",
    "load_recipe",
    "plan",
    "run_recipe",
    "to_markdown",
    "write_results",
]
