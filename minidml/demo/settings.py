"""The demo's fixed settings: its corpus (sentences and seed of the grammar) and its length,
read by :mod:`minidml.demo.run` and by the command line's help (without loading training)."""

DEMO_SENTENCES = 60_000
DEMO_SEED = 0
DEMO_STEPS = 150  # with Muon, the students go from chance to about 98% on agreement
