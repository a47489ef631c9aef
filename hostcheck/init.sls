# hostcheck formula: include in a highstate (top.sls: `- hostcheck`) or apply
# alone (`salt '*' state.apply hostcheck test=True`). Each remedy is its own
# SLS so it can be included on its own; each is switched by pillar (keys in
# pillar.example). Defaults are safe: only orphans.sls acts without pillar
# (it reaps leaked trees; `hostcheck:orphans:reap:enabled: false` turns it
# off); the remedies that restart services or rewrite files act only when
# their pillar key is set. On a healthy host `state.apply hostcheck
# test=True` reports no changes.
include:
  - hostcheck.orphans
  - hostcheck.services
  - hostcheck.timezone
  - hostcheck.logind
  - hostcheck.rlimits
  - hostcheck.metrics
