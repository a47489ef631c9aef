{#- Reap leaked process trees (hostcheck.orphans_reaped).
    pillar hostcheck:orphans:reap: {enabled, match, exclude, timeout} -#}
{%- set reap = salt['pillar.get']('hostcheck:orphans:reap', {}) %}
{%- if reap.get('enabled', True) %}
hostcheck-orphans-reaped:
  hostcheck.orphans_reaped:
    - name: leaked process trees
{%-   for key in ('match', 'exclude', 'timeout') %}
{%-     if reap.get(key) is not none %}
    - {{ key }}: {{ reap[key] | json }}
{%-     endif %}
{%-   endfor %}
{%- endif %}
