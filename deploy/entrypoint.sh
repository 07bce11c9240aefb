#!/bin/sh
# bandsync ROLE [ARGS...]: ROLE is coordinator, agent or server; anything else runs as a command.
set -e
role=${1:-}
[ $# -gt 0 ] && shift
case "$role" in
  coordinator) exec bandsync-coordinator "$@" ;;
  agent) exec bandsync-agent "$@" ;;
  server) exec bandsync-server "$@" ;;
  "") echo "usage: bandsync coordinator|agent|server [ARGS...]" >&2; exit 2 ;;
  *) exec "$role" "$@" ;;
esac
