//! POSIX sh fragments shared by the scripts this crate runs through a
//! transport (dash, bash and busybox ash all run them). Values are spliced in
//! with `shell_quote` only.

/// Functions that tell whether a venue's agent runs:
///
/// - `_sbx_runs PID`: the process exists and is not a zombie (PID 1 of a
///   container may never reap the orphaned agent).
/// - `_sbx_owned DIR PID`: `PID` runs and its working folder is `DIR`, so a
///   recycled pid of some other process is never taken for the agent.
/// - `_sbx_pid DIR`: sets `_p` to the pid in `DIR/agent.pid` (status 1 when
///   there is none).
/// - `_sbx_alive DIR`: the venue's agent runs and has not written
///   `exited.json`.
///
/// Without `/proc` (not Linux) they fall back to `kill -0`.
pub(crate) const PRELUDE: &str = r#"
_sbx_runs() {
  if [ -d /proc/self ]; then
    _s=
    { read -r _s < "/proc/$1/stat"; } 2>/dev/null || [ -n "$_s" ] || return 1
    _s=${_s##*) }
    case "$_s" in ''|Z*|X*) return 1 ;; esac
    return 0
  fi
  kill -0 "$1" 2>/dev/null
}
_sbx_owned() {
  _sbx_runs "$2" || return 1
  [ -d /proc/self ] || return 0
  _c=$(readlink "/proc/$2/cwd" 2>/dev/null) || return 1
  [ "$_c" = "$(cd "$1" 2>/dev/null && pwd -P)" ]
}
_sbx_pid() {
  _p=
  { read -r _p < "$1/agent.pid"; } 2>/dev/null
  case "$_p" in ''|*[!0-9]*) _p=; return 1 ;; esac
  return 0
}
_sbx_alive() {
  [ -e "$1/exited.json" ] && return 1
  _sbx_pid "$1" || return 1
  _sbx_owned "$1" "$_p"
}
"#;
