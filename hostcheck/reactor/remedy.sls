{#- Reactor: apply the matching remedy SLS to the minion whose hostcheck
    beacon fired, opt-in per check from that minion's own pillar.

    Master config:

        reactor:
          - 'salt/beacon/*/hostcheck/*':
            - salt://hostcheck/reactor/remedy.sls

    Minion pillar (only the checks named true are remedied):

        hostcheck:
          reactor:
            orphans: true            # hostcheck.orphans  (reap leaked trees)
            deleted_binaries: true   # hostcheck.services (restart: also needs
                                     #   hostcheck:deleted_binaries:restart)
            timezone: true           # hostcheck.timezone (also needs
                                     #   hostcheck:timezone:pin:zone)

    Only `found` events of a warning or critical finding react; `resolved`
    and `error` events do not. The job is published to the minion that fired
    with a compound target that also requires the pillar key
    (`L@<id> and I@hostcheck:reactor:<check>:true`), so the minion decides
    with its own pillar whether it takes part, and a minion without the key
    ignores it. The remedy SLS is the formula's own: it diagnoses again
    before it acts, and does what the formula would do in a highstate. -#}
{%- set remedies = {'orphans': 'hostcheck.orphans',
                    'deleted_binaries': 'hostcheck.services',
                    'timezone': 'hostcheck.timezone',
                    'rlimits': 'hostcheck.rlimits',
                    'logind': 'hostcheck.logind'} %}
{%- set event = data if data is mapping else {} %}
{%- set minion = event.get('id', '') | string %}
{%- set check = event.get('check', '') | string %}
{%- if event.get('state') == 'found'
      and event.get('severity') in ('critical', 'warning')
      and check in remedies
      and minion | regex_match('^([A-Za-z0-9][A-Za-z0-9._-]*)$') %}
hostcheck-remedy-{{ check }}-{{ minion }}:
  local.state.apply:
    - tgt: {{ ('L@' ~ minion ~ ' and I@hostcheck:reactor:' ~ check ~ ':true') | json }}
    - tgt_type: compound
    - args:
      - mods: {{ remedies[check] | json }}
{%- endif %}
