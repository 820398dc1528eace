"""``anogen run PLAN --status``: each step's state, read from the output folder only."""

from __future__ import annotations

from anogen.runplan.execute import settings_section
from anogen.runplan.plan import Plan
from anogen.runplan.steps import DONE, RUNNING, Shard, build_steps, steps_of_shard
from anogen.runplan.table import RESULTS_MD


def status_lines(plan: Plan, shard: Shard | None = None) -> list[str]:
    """One line per step: stage, category/name, state (done, pending, waiting,
    running-or-incomplete) and, for a done step, its time; then a count per state."""
    steps = steps_of_shard(build_steps(plan), shard)
    lines = []
    counts: dict[str, int] = {}
    for step in steps:
        state = step.state()
        counts[state] = counts.get(state, 0) + 1
        note = ""
        if state == DONE:
            record = step.done_record()
            note = f"  {record.get('seconds', '?')} s"
            if record.get("settings") not in (None, plan.settings_digest(settings_section(step.stage))):
                note += f"  (made with other settings; delete {step.folder} to redo it)"
        elif state == RUNNING:
            note = f"  (staging folder {step.staging_folders()[0].name})"
        lines.append(f"{step.stage:<9} {step.category + '/' + step.name:<40} {state}{note}")
    summary = ", ".join(f"{counts[s]} {s}" for s in sorted(counts))
    results = plan.out / RESULTS_MD
    lines.append(f"{len(steps)} steps{'' if shard is None else f' in shard {shard}'}: {summary}")
    lines.append(f"results: {results if results.is_file() else 'not yet (written when every evaluation is done)'}")
    return lines
