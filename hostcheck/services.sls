{#- Restart what runs old code (hostcheck.services_current): opt-in, since it
    restarts services. Only when pillar hostcheck:deleted_binaries:restart is
    a mapping (enabled unless `enabled: false`). Keys: {only, exclude}; the
    units never restarted and the paths never reported come from
    hostcheck:deleted_binaries:{refuse, ignore}. -#}
{%- set restart = salt['pillar.get']('hostcheck:deleted_binaries:restart', none) %}
{%- if restart is mapping and restart.get('enabled', True) %}
hostcheck-services-current:
  hostcheck.services_current:
    - name: services running old code
{%-   for key in ('only', 'exclude') %}
{%-     if restart.get(key) is not none %}
    - {{ key }}: {{ restart[key] | json }}
{%-     endif %}
{%-   endfor %}
{%- endif %}
