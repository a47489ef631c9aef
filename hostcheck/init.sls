# hostcheck formula: include in a highstate (top.sls: `- hostcheck`) or apply
# alone (`salt '*' state.apply hostcheck test=True`). Each remedy is its own
# SLS so it can be included on its own; pillar keys are in pillar.example.
include:
  - hostcheck.orphans
  - hostcheck.timezone
