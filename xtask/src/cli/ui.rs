//! `cargo xtask ui [app]`: the live page (see `crate::ui`), until Ctrl-C.

use aether_artifact::AppName;
use anyhow::Result;

use super::Ctx;
use crate::ops::ui::{self, UiArgs};

/// Serve a live page of the app's pods, reloads and logs, with buttons for hot-patch and
/// rollback, on 127.0.0.1.
#[derive(clap::Args)]
pub struct Ui {
    /// The app to show [default: every app the control plane knows].
    app: Option<AppName>,
    #[command(flatten)]
    ui: UiArgs,
}

impl Ui {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let open = ctx.target.opener(ctx.sh, &ctx.global);
        let apps = ui::apps(&*open.open(ctx.sh), self.app)?;
        let page = ui::start(open, &apps, self.ui.ui_port)?;
        let names: Vec<&str> = apps.iter().map(|a| a.as_str()).collect();
        eprintln!("showing {}; Ctrl-C to stop", names.join(", "));
        // On stdout alone, for scripts (and the test) to read.
        println!("ui: {}", page.url);
        page.serve_forever()
    }
}
