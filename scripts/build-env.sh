# shellcheck shell=bash
# Sourced by scripts/quickstart and scripts/test, the README's two
# commands: `sbx_build_env` makes this machine able to build the workspace,
# installing what is missing.
#
# - Debian packages the build needs (a C compiler, pkg-config and OpenSSL
#   headers: ssh2's libssh2 builds against OpenSSL).
# - A Rust toolchain new enough for the workspace (rust-version in
#   Cargo.toml): the one on PATH if it is new enough; else a rustup install
#   in this home, in root's, or under /usr/local (a machine image installs
#   rustup once, for one user; from another home, or with a bare PATH,
#   rustup's cargo is not on PATH, or answers "no default toolchain" until
#   RUSTUP_HOME points at the home it was installed in); else Debian's
#   cargo and rustc, if they are new enough.

sbx_say() { printf '==> %s\n' "$*" >&2; }
sbx_die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# Root runs apt-get itself; anyone else through sudo, and only when something
# is missing.
sbx_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        sbx_die "not root and no sudo: as root, run: $*"
    fi
}

sbx_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

SBX_APT_UPDATED=0
sbx_apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ $SBX_APT_UPDATED = 0 ]; then
        sbx_as_root apt-get update -q
        SBX_APT_UPDATED=1
    fi
    sbx_as_root apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "$@"
}

sbx_rust_needed() {
    sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1
}

# Whether the cargo and rustc on PATH run and are new enough.
sbx_rust_ok() {
    local need have
    cargo --version >/dev/null 2>&1 || return 1
    have=$(rustc --version 2>/dev/null | awk '{ print $2 }') || return 1
    need=$(sbx_rust_needed)
    [ -z "$need" ] && return 0
    [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" = "$need" ]
}

sbx_find_rust() {
    if command -v cargo >/dev/null && sbx_rust_ok; then
        return 0
    fi
    local base
    for base in "$HOME" /root /usr/local; do
        local bin="$base/.cargo/bin"
        [ -x "$bin/cargo" ] || bin="$base/cargo/bin"
        [ -x "$bin/cargo" ] || continue
        export PATH="$bin:$PATH"
        if ! cargo --version >/dev/null 2>&1; then
            local home="${bin%/bin}"
            home="${home%/.cargo}"
            home="${home%/cargo}"
            if [ -d "$home/.rustup/toolchains" ]; then
                export RUSTUP_HOME="$home/.rustup" CARGO_HOME="$home/.cargo"
            elif [ -d "$home/rustup/toolchains" ]; then
                export RUSTUP_HOME="$home/rustup" CARGO_HOME="$home/cargo"
            fi
        fi
        if sbx_rust_ok; then
            sbx_say "using the Rust toolchain in $bin"
            return 0
        fi
    done
    return 1
}

sbx_build_env() {
    if command -v dpkg-query >/dev/null; then
        local missing=() p
        for p in build-essential pkg-config libssl-dev ca-certificates; do
            sbx_installed "$p" || missing+=("$p")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            sbx_say "installing ${missing[*]}"
            sbx_apt_install "${missing[@]}"
        fi
    else
        printf 'WARNING: %s\n' "not a Debian system: make sure a C compiler, pkg-config and \
OpenSSL headers are installed" >&2
    fi
    if [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    if sbx_find_rust; then
        return 0
    fi
    if ! command -v cargo >/dev/null; then
        sbx_say "no Rust toolchain: installing Debian's cargo and rustc"
        sbx_apt_install cargo rustc
    fi
    sbx_rust_ok || sbx_die "this workspace needs Rust $(sbx_rust_needed) or newer, and the only \
toolchain here is $(rustc --version 2>/dev/null || echo none): install rustup (https://rustup.rs), \
then run this again"
}
