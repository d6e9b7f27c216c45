//! `sandboxer serve` and `sandboxer tokens` (being written).

use sandboxer_core::{Error, Result};

use crate::args::{ServeArgs, TokensCmd};
use crate::Env;

pub async fn run(_env: &Env, _args: ServeArgs, _json: bool) -> Result<i32> {
    Err(Error::unsupported(
        "`sandboxer serve` is not in this build yet",
    ))
}

pub fn tokens(_env: &Env, _cmd: TokensCmd, _json: bool) -> Result<i32> {
    Err(Error::unsupported(
        "`sandboxer tokens` is not in this build yet",
    ))
}
