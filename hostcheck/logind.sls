{#- Clean logind's session pile (hostcheck.logind_clean): opt-in, only when
    pillar hostcheck:logind:clean is a mapping (enabled unless
    `enabled: false`). Keys: {closing, older_than, cron_pam}; the thresholds
    of the diagnosis come from hostcheck:logind:{pile_warning, ...}. -#}
{%- set clean = salt['pillar.get']('hostcheck:logind:clean', none) %}
{%- if clean is mapping and clean.get('enabled', True) %}
hostcheck-logind-clean:
  hostcheck.logind_clean:
    - name: logind sessions
{%-   for key in ('closing', 'older_than', 'cron_pam') %}
{%-     if clean.get(key) is not none %}
    - {{ key }}: {{ clean[key] | json }}
{%-     endif %}
{%-   endfor %}
{%- endif %}
