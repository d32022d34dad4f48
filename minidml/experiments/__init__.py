"""Experiments: the paper's comparison as one command (:mod:`~minidml.experiments.compare`,
its settings in :mod:`~minidml.experiments.config` and its report in
:mod:`~minidml.experiments.report`), paired statistics (:mod:`~minidml.experiments.paired`)
and plots (:mod:`~minidml.experiments.plot`)."""
