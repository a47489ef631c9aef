{#- Export hostcheck's metrics for node_exporter's textfile collector
    (hostcheck.metrics_exported): opt-in, only when pillar
    hostcheck:metrics:path is set (the collector's directory must exist). -#}
{%- set path = salt['pillar.get']('hostcheck:metrics:path', none) %}
{%- if path %}
hostcheck-metrics-exported:
  hostcheck.metrics_exported:
    - name: hostcheck metrics
    - path: {{ path | json }}
{%- endif %}
