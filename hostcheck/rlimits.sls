{#- Pin the resource limits of systemd services (hostcheck.service_limits):
    opt-in, one state per unit under pillar hostcheck:rlimits:units, e.g.
      hostcheck:rlimits:units:
        nginx.service: {nofile: 65536}
        worker@1.service: {nofile: "1024:65536", nproc: 4096, restart: false}
    Keys per unit: nofile, nproc, core, memlock (an int, unlimited, "soft:hard"
    quoted, or {soft, hard}), restart (default true), force (default false).
    A pillar that is not shaped so (not a mapping, an unknown key) stops the
    rendering with the reason: nothing is applied. Values are validated by
    the state itself (result False, nothing changed). -#}
{%- set known = ['nofile', 'nproc', 'core', 'memlock', 'restart', 'force'] %}
{%- set units = salt['pillar.get']('hostcheck:rlimits:units', {}) %}
{%- if units is not mapping %}
{{- raise('pillar hostcheck:rlimits:units must be a mapping of unit to limits') }}
{%- endif %}
{%- for unit, spec in units | dictsort %}
{%-   if spec is not mapping %}
{{- raise('pillar hostcheck:rlimits:units:' ~ unit ~ ' must be a mapping of limits, e.g. {nofile: 65536}') }}
{%-   endif %}
{%-   for key in spec if key not in known %}
{{- raise('pillar hostcheck:rlimits:units:' ~ unit ~ ': unknown key ' ~ key ~ ' (known: ' ~ known | join(', ') ~ ')') }}
{%-   endfor %}
hostcheck-service-limits-{{ unit }}:
  hostcheck.service_limits:
    - name: {{ unit | json }}
{%-   for key in known %}
{%-     if spec.get(key) is not none %}
    - {{ key }}: {{ spec[key] | json }}
{%-     endif %}
{%-   endfor %}
{%- endfor %}
