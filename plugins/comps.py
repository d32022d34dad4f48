"""``comps``: COMPS (Misra et al., 2023), property knowledge and its inheritance, in the
BabyLM 2025/2026 strict pipeline's form.

Each row gives a property (``property_phrase``, e.g. "can fly") and two subjects, an
acceptable and an unacceptable one, as prefixes (``prefix_acceptable``,
``prefix_unacceptable``). The choices are ``prefix + " " + property_phrase``; the property's
tokens are scored after each prefix by the evaluation's protocol. An item is correct when the
acceptable one scores at least as high. Four files, four tasks (``base``, ``wugs``,
``wugs_dist_before``, ``wugs_dist_in_between``); the suite's score is their unweighted mean.
Defined under ``babylm-2026`` only.
"""

from __future__ import annotations

from minidml.evaluation.hookspecs import hookimpl
from minidml.evaluation.suite import Choices, EvalContext, SuiteResult, read_jsonl, score_choices

FOLDER = "babylm-eval-2026/full_eval/comps"
# the official task name of each file
FILES = {"comps_base": "base", "comps_wugs": "wugs", "comps_wugs_dist-before": "wugs_dist_before",
         "comps_wugs_dist-in-between": "wugs_dist_in_between"}
FIELDS = {"prefix_acceptable": str, "prefix_unacceptable": str, "property_phrase": str}


class CompsSuite:
    def evaluate(self, ctx: EvalContext) -> SuiteResult:
        tasks = {}
        for stem, task in FILES.items():
            rows = read_jsonl(ctx.path(f"{FOLDER}/{stem}.jsonl"), FIELDS)
            tasks[task] = [Choices((r["property_phrase"],) * 2,
                                   (r["prefix_acceptable"] + " ", r["prefix_unacceptable"] + " "),
                                   "") for r in rows]
        return score_choices(ctx, tasks)


@hookimpl
def register_suites(register):
    register("comps", CompsSuite, version="1",
             description="COMPS property knowledge (BabyLM 2025/2026): 4 subsets",
             requires=tuple(f"{FOLDER}/{stem}.jsonl" for stem in FILES),
             protocols=("babylm-2026",))
