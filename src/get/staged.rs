//! An output directory built under a temp name inside the destination and
//! renamed into place only when complete: a failed step leaves nothing that
//! looks like a result.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct Staged {
    partial: PathBuf,
    target: PathBuf,
}

impl Staged {
    /// Prepares `dest/<name>`, clearing what an earlier attempt left.
    pub async fn new(dest: &Path, name: &str) -> anyhow::Result<Self> {
        let staged = Staged {
            partial: dest.join(format!(".{name}.partial")),
            target: dest.join(name),
        };
        for stale in [&staged.partial, &staged.target] {
            if stale.exists() {
                tokio::fs::remove_dir_all(stale)
                    .await
                    .with_context(|| format!("removing {}", stale.display()))?;
            }
        }
        Ok(staged)
    }

    /// Where to build the output.
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// Moves the output into place when `built` succeeded; removes it otherwise.
    pub async fn commit(self, built: anyhow::Result<()>) -> anyhow::Result<()> {
        match built {
            Ok(()) => tokio::fs::rename(&self.partial, &self.target)
                .await
                .with_context(|| format!("moving the output into {}", self.target.display())),
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&self.partial).await;
                Err(e)
            }
        }
    }
}
