//! WORKDIR: keyed by its path and the USER who owns what it creates; executed by the
//! executor's `mkdir -p` on the layers below ([`kiln_executor::workdir`]).

use super::StepContext;
use crate::blocking::blocking;
use crate::error::{SolveError, StepError};
use kiln_parser::WorkdirOp;
use serde::Serialize;
use std::path::Path;

/// The hashed parameters of a WORKDIR: `{"workdir": {"path", "user"}}`.
#[derive(Serialize)]
struct WorkdirKey<'a> {
    workdir: WorkdirFields<'a>,
}

#[derive(Serialize)]
struct WorkdirFields<'a> {
    path: &'a str,
    user: &'a str,
}

/// The key parameters of `w`; it reads nothing but the step below.
pub(crate) fn key(w: &WorkdirOp) -> Result<serde_json::Value, StepError> {
    let WorkdirOp { path, user } = w;
    let key = WorkdirKey {
        workdir: WorkdirFields { path, user },
    };
    serde_json::to_value(key).map_err(StepError::KeySerialize)
}

/// Makes the directory into `out`.
pub(crate) async fn exec(
    w: &WorkdirOp,
    ctx: &StepContext<'_>,
    out: &Path,
) -> Result<(), SolveError> {
    let (lowers, path, user) = (ctx.current.lowers(), w.path.clone(), w.user.clone());
    let out = out.to_path_buf();
    blocking(move || kiln_executor::workdir::make_workdir(lowers, &path, &user, &out))
        .await
        .map_err(|e| ctx.at(e))
}
