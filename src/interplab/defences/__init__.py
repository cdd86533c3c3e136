"""Defences against unwanted requests, behind one detector interface, and attacks on them.

Three defences on the same model, layers and data (``docs/reroute.md``):

- **HP**, a harmfulness probe: a logistic probe on the frozen model's activations
  (:mod:`~interplab.defences.heads`; also a parameter-matched MLP head);
- **RR**, representation rerouting / circuit breakers (Zou et al. 2024): LoRA adapters trained to
  push the unwanted requests' representations orthogonal to where they were, with a retain loss
  elsewhere; its score is how far the representations moved (:mod:`~interplab.defences.train`);
- **LoRA + probe**: the *same* adapters plus a linear head, trained with a classification loss in
  place of the rerouting loss and the same retain loss.

:mod:`~interplab.defences.lora` holds the adapters (``peft``), :mod:`~interplab.defences.detectors`
the scores, :mod:`~interplab.defences.attacks` an input-embedding attack and a token-level attack,
:mod:`~interplab.defences.retain` what the adapters cost on neutral text. Settings (torch-free)
are in :mod:`~interplab.defences.settings`. Import the submodules directly.
"""
