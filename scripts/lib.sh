# Shared helpers for the scripts in this folder. Source it; do not run it.

# ensure_commands CMD:PACKAGE...: installs each Debian PACKAGE whose CMD is missing from PATH.
ensure_commands() {
  local missing=()
  for pair in "$@"; do
    local cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to apt-get install ${missing[*]}" >&2; return 1; }
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "no apt-get: install ${missing[*]} yourself" >&2; return 1; }
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ensure_build_deps: what the Rust build needs beyond the toolchain. rust_socketio (the Socket.IO
# client of the agent and of the server's tests) links OpenSSL through openssl-sys.
ensure_build_deps() {
  ensure_commands pkg-config:pkg-config
  pkg-config --exists openssl 2>/dev/null && return 0
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  echo "installing: libssl-dev" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq libssl-dev >/dev/null
}
