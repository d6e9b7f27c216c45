//! `sandboxer events` (being written).

use sandboxer_core::{Error, Result};

use crate::args::EventsCmd;
use crate::Env;

pub async fn run(_env: &Env, _cmd: EventsCmd, _json: bool) -> Result<i32> {
    Err(Error::unsupported(
        "`sandboxer events` is not in this build yet",
    ))
}
