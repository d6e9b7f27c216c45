# shellcheck shell=bash
# Sourced by scripts/quickstart and scripts/test: find a Rust toolchain new
# enough for this workspace (rust-version in Cargo.toml).
#
# The one on PATH if it is new enough; else a rustup install in this home,
# in root's, or under /usr/local (a machine image installs rustup once, for
# one user; from another home, or with a bare PATH, rustup's cargo is not on
# PATH, or answers "no default toolchain" until RUSTUP_HOME points at the
# home it was installed in). Returns 1 when there is none.

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
            printf '==> using the Rust toolchain in %s\n' "$bin" >&2
            return 0
        fi
    done
    return 1
}
