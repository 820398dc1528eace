"""``anogen run``: the whole method for many categories and defect kinds, resumable and shardable.

- :mod:`anogen.runplan.plan`: the TOML plan and its checks;
- :mod:`anogen.runplan.steps`: the steps, their folders and states;
- :mod:`anogen.runplan.execute`: running them (the same library calls as the CLI);
- :mod:`anogen.runplan.ranks`: stage 2 across ``accelerate launch`` processes;
- :mod:`anogen.runplan.table`: the results table (the paper's Table 1 shape).
"""

from anogen.runplan.plan import CategoryPlan, KindPlan, Plan, load_plan, parse_plan
from anogen.runplan.steps import Shard, Step, build_steps

__all__ = ["CategoryPlan", "KindPlan", "Plan", "Shard", "Step", "build_steps", "load_plan", "parse_plan"]
