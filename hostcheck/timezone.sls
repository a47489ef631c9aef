{#- Pin the timezone (hostcheck.timezone_pinned): opt-in, only when
    pillar hostcheck:timezone:pin:zone is set. Keys: {zone, copy, timeout};
    the time-caching daemons come from hostcheck:timezone:daemons. -#}
{%- set pin = salt['pillar.get']('hostcheck:timezone:pin', {}) %}
{%- if pin.get('zone') is not none %}
hostcheck-timezone-pinned:
  hostcheck.timezone_pinned:
    - name: {{ pin['zone'] | json }}
{%-   for key in ('copy', 'timeout') %}
{%-     if pin.get(key) is not none %}
    - {{ key }}: {{ pin[key] | json }}
{%-     endif %}
{%-   endfor %}
{%- endif %}
