#!/bin/sh
# bandsync ROLE [ARGS...]: ROLE is coordinator or agent; anything else runs as a command.
set -e
role=${1:-}
[ $# -gt 0 ] && shift
case "$role" in
  coordinator) exec bandsync-coordinator "$@" ;;
  agent) exec bandsync-agent "$@" ;;
  "") echo "usage: bandsync coordinator|agent [ARGS...]" >&2; exit 2 ;;
  *) exec "$role" "$@" ;;
esac
