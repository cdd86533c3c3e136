"""The study spine: what every study shares, written once.

- :mod:`~interplab.study.settings`: ``RunConfig`` (model, seed, n_boot, batch size, device,
  threads), ``SplitConfig`` (the one split convention), ``ProbeConfig`` (probes, centring);
  torch-free, so the CLI can read them cheaply.
- :mod:`~interplab.study.data`: statement datasets loaded, paired, subsampled and split by entity.
- :mod:`~interplab.study.harvest`: the one cached statement harvest.
- :mod:`~interplab.study.layers`: the one layer-choice rule (validation → test).
- :mod:`~interplab.study.result`: results save and load one way, with config and versions.

Studies (:mod:`interplab.studies`) import from here and from the science packages, never from
each other. Import the submodules directly; this package imports nothing heavy itself.
"""
