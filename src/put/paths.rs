//! `params.image` and every other path parameter of a put: a shell-style
//! glob under the put's working directory. A leaf: the recipes use it, and
//! it names none of them.
//!
//! Every path a put reads stays inside the directory it was given: a
//! pattern with a `..` component is refused before globbing, and each
//! match is resolved (symbolic links followed) and refused if it lands
//! outside. In Concourse that directory holds every input of the put, so
//! nothing legitimate lives outside it.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

use crate::reference::Repository;

/// A path parameter: the field it came from and its value, which messages
/// quote only when it cannot be a secret (`params.sign.key` may hold a key
/// pasted in a form this resource does not read: it is never quoted).
#[derive(Clone, Copy, Debug)]
pub struct PathParam<'a> {
    /// The field, as the user wrote it (`params.package.path`).
    pub field: &'a str,
    /// The pattern.
    pub pattern: &'a str,
    /// Whether the value may be quoted in messages.
    pub quotable: bool,
}

impl<'a> PathParam<'a> {
    /// A field whose value may be quoted.
    pub fn new(field: &'a str, pattern: &'a str) -> Self {
        PathParam {
            field,
            pattern,
            quotable: true,
        }
    }

    /// A field that may hold a secret: its value is never quoted.
    pub fn secret(field: &'a str, pattern: &'a str) -> Self {
        PathParam {
            field,
            pattern,
            quotable: false,
        }
    }

    /// `<field> 'pattern'`, or the field alone for a secret one.
    fn named(&self) -> String {
        if self.quotable {
            format!("{} '{}'", self.field, self.pattern)
        } else {
            self.field.to_owned()
        }
    }
}

/// The one path `params.image` (relative to `src`; a leading `/` is still
/// under `src`) matches, with the original resource's messages.
pub fn locate_image(src: &Path, pattern: &str) -> anyhow::Result<PathBuf> {
    if pattern.is_empty() {
        bail!(
            "params.image is required: the path of the image to push, relative to {}",
            src.display()
        );
    }
    locate(src, PathParam::new("params.image", pattern))
}

/// The one path `param` matches under `src`.
pub fn locate(src: &Path, param: PathParam<'_>) -> anyhow::Result<PathBuf> {
    if param.pattern.trim().is_empty() {
        bail!(
            "{} is empty: it must name a path under the put's directory",
            param.field
        );
    }
    let mut matches = locate_all(src, param, 20)?;
    match matches.len() {
        1 => Ok(matches.remove(0)),
        _ if !param.quotable => bail!("{}: more than one file matches", param.field),
        _ => bail!(
            "{}: too many files/directories match glob '{}': [{}]",
            param.field,
            param.pattern,
            matches
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// The plain path (not a glob) `param` names under `src`, refused if it
/// leaves `src` (`..`, or a symbolic link on the way); it need not exist.
pub fn contained(src: &Path, param: PathParam<'_>) -> anyhow::Result<PathBuf> {
    let relative = relative_to_src(param)?;
    let path = src.join(relative);
    if let Ok(real) = path.canonicalize() {
        let root = src
            .canonicalize()
            .with_context(|| format!("the put's directory {}", src.display()))?;
        if !real.starts_with(&root) {
            bail!(
                "{}: leads outside the put's directory (through a symbolic link)",
                param.named()
            );
        }
    }
    Ok(path)
}

/// The pattern without its root (a leading `/` is still under the put's
/// directory); `..` is refused.
fn relative_to_src(param: PathParam<'_>) -> anyhow::Result<PathBuf> {
    let mut relative = PathBuf::new();
    for component in Path::new(param.pattern).components() {
        match component {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => bail!(
                "{}: '..' is not allowed: paths stay inside the put's directory",
                param.named()
            ),
            Component::Normal(part) => relative.push(part),
        }
    }
    Ok(relative)
}

/// Every path `param` matches under `src` (at least one, sorted), up to
/// `limit` and one more, each inside `src` once symbolic links are
/// followed.
pub fn locate_all(src: &Path, param: PathParam<'_>, limit: usize) -> anyhow::Result<Vec<PathBuf>> {
    let relative = relative_to_src(param)?;
    let full = format!(
        "{}/{}",
        glob::Pattern::escape(&src.to_string_lossy()),
        relative.to_string_lossy()
    );
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let glob = match glob::glob_with(&full, options) {
        Ok(glob) => glob,
        Err(e) if param.quotable => {
            bail!(
                "{}: failed to glob path '{}': {}",
                param.field,
                param.pattern,
                e.msg
            )
        }
        Err(_) => bail!("{}: not a valid glob", param.field),
    };
    let root = src
        .canonicalize()
        .with_context(|| format!("the put's directory {}", src.display()))?;
    let mut matches = Vec::new();
    for entry in glob {
        let path = match entry {
            Ok(path) => path,
            Err(e) if param.quotable => {
                bail!("{}: cannot read {}", param.named(), e.path().display())
            }
            Err(_) => bail!("{}: a directory on its way cannot be read", param.field),
        };
        let inside = path
            .canonicalize()
            .is_ok_and(|real| real.starts_with(&root));
        if !inside {
            if param.quotable {
                bail!(
                    "{}: {} leads outside the put's directory (through a symbolic link), or \
                     is a broken link",
                    param.field,
                    path.display()
                );
            }
            bail!(
                "{}: the path leads outside the put's directory (through a symbolic link), \
                 or is a broken link",
                param.field
            );
        }
        matches.push(path);
        if matches.len() > limit {
            break;
        }
    }
    if matches.is_empty() {
        if param.quotable {
            bail!("{}: no files match glob '{}'", param.field, param.pattern);
        }
        bail!(
            "{}: no file matches (its value is never shown)",
            param.field
        );
    }
    Ok(matches)
}

/// The repository an input was fetched from, when a `get` of this resource
/// wrote it (the `repository` file next to `image.tar` or `oci/`): blobs
/// can be mounted from there instead of uploaded.
pub fn origin_repository(path: &Path) -> Option<Repository> {
    let file = path.parent()?.join("repository");
    let text = std::fs::read_to_string(file).ok()?;
    Repository::parse(text.trim()).ok()
}
