"""``entity-tracking``: the BabyLM 2025/2026 entity-tracking task (Kim & Schuster, 2023),
scored as the official strict pipeline scores it.

Each row gives a description of boxes and their contents that ends in an open statement
(``input_prefix``, e.g. "… Box 1 contains ") and several ``options``, the first correct. The
choices are ``input_prefix + option``, each option scored after its prefix by the
evaluation's protocol (``babylm-2026``: the option's tokens, joined to the prefix with
nothing in between). An item is correct when no option scores higher than the first.

Tasks are the official subsets ``<file>_<numops>_ops`` (the file's name and the number of
operations applied to the boxes, 0–5); each file's score is the unweighted mean of its
subsets, and the suite's score the mean of the three files' (regular, ambiref,
move_contents), as the pipeline reports it. The fast set, for checkpoints, is the regular
file's alone (``regular_0_ops`` … ``regular_5_ops``: the official collation's counts of it;
other files in its folder are not read). Defined under ``babylm-2026`` only.
"""

from __future__ import annotations

from minidml import MinidmlError
from minidml.evaluation.hookspecs import hookimpl
from minidml.evaluation.suite import Choices, EvalContext, SuiteResult, read_jsonl, score_choices

FOLDER = "babylm-eval-2026/full_eval/entity_tracking"
FAST_FOLDER = "babylm-eval-2026/fast_eval/entity_tracking_fast"
FILES = ("regular", "ambiref", "move_contents")  # the official order of the three splits
FAST_FILES = ("regular",)  # what the official collation takes of the fast set
FIELDS = {"input_prefix": str, "options": list, "numops": int}


class EntityTrackingSuite:
    folder: str = FOLDER
    files: tuple[str, ...] = FILES

    def evaluate(self, ctx: EvalContext) -> SuiteResult:
        tasks: dict[str, list[Choices]] = {}
        groups: dict[str, list[str]] = {}
        for stem in self.files:
            path = ctx.path(f"{self.folder}/{stem}.jsonl")
            subsets: dict[str, list[Choices]] = {}
            for number, row in enumerate(read_jsonl(path, FIELDS), 1):
                options = row["options"]
                if len(options) < 2 or not all(isinstance(o, str) for o in options):
                    raise MinidmlError(f"{path}:{number}: field 'options' should be a list of "
                                       "two or more strings, the correct one first")
                name = f"{stem}_{row['numops']}_ops"
                subsets.setdefault(name, []).append(
                    Choices(tuple(options), (row["input_prefix"],) * len(options), ""))
            if not subsets:
                raise MinidmlError(f"{path}: no items")
            for name in sorted(subsets, key=lambda n: int(n.rsplit("_", 2)[1])):
                tasks[name] = subsets[name]
            groups[stem] = [n for n in tasks if n.startswith(f"{stem}_")]
        return score_choices(ctx, tasks, {ctx.suite: self.files, **groups})


class EntityTrackingFastSuite(EntityTrackingSuite):
    folder = FAST_FOLDER
    files = FAST_FILES


@hookimpl
def register_suites(register):
    register("entity-tracking", EntityTrackingSuite, version="1",
             description="entity tracking (BabyLM 2025/2026): 3 files, 9,483 items",
             requires=tuple(f"{FOLDER}/{f}.jsonl" for f in FILES),
             protocols=("babylm-2026",))
    register("entity-tracking-fast", EntityTrackingFastSuite, version="2",
             description="entity tracking, the fast subset for checkpoints: its regular file "
                         "(no verified public copy: place it in " + FAST_FOLDER + ")",
             requires=tuple(f"{FAST_FOLDER}/{f}.jsonl" for f in FAST_FILES),
             protocols=("babylm-2026",))
