//! `doctor`'s view of the control plane: whether the target has one, and whether it answers
//! with the saved admin token (its /v1/apps reads the database).

use super::check::{Check, Verdict};
use crate::targets::Target;

pub fn control_check(t: &dyn Target) -> Check {
    let check = |status, detail: String, fix: Option<&str>| Check {
        name: "control",
        status,
        detail,
        fix: fix.map(str::to_string),
        required: false,
    };
    match t.control_if_running() {
        Ok(None) => check(
            Verdict::Missing,
            "no control plane: pods read the store with a per-app key, uploads are not registered".into(),
            Some(match t.name() {
                "local" => "unset AETHER_CONTROL (it is `off`)",
                _ => "cargo xtask --target kube bootstrap (without --no-control)",
            }),
        ),
        Err(e) => check(
            Verdict::Missing,
            format!("{e:#}"),
            Some("the next upload or deploy starts it"),
        ),
        Ok(Some(c)) => match c.apps() {
            Ok(apps) => check(
                Verdict::Ok,
                format!(
                    "answers at {}; {} app(s) registered",
                    c.base(),
                    apps.len()
                ),
                None,
            ),
            Err(e) => check(
                Verdict::Broken,
                e.to_string(),
                Some("check its pod (`kubectl -n <ns> logs deploy/aether-control`) or rerun bootstrap"),
            ),
        },
    }
}
