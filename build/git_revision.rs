//! The git revision `aperture --version` prints, shared by `build.rs` and a test.
//!
//! `APERTURE_GIT_REV` in the environment wins (a distribution building from a tarball can pass
//! the revision it packs). Otherwise the revision is asked of git, but only when `dir` itself is
//! a checkout (`dir/.git` exists): a tarball unpacked inside some other repository must not
//! report that repository's commit. Anything else, git missing included, is "unknown".

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable that overrides the revision.
pub const OVERRIDE: &str = "APERTURE_GIT_REV";

/// The revision of the checkout at `dir` (12 hex digits), `override_rev` when given and not
/// empty, or `"unknown"`.
pub fn git_revision(dir: &Path, override_rev: Option<&str>) -> String {
    if let Some(rev) = override_rev.map(str::trim).filter(|r| !r.is_empty()) {
        return rev.to_owned();
    }
    if !dir.join(".git").exists() {
        return "unknown".to_owned();
    }
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The paths whose change means HEAD may have moved: `.git/HEAD`, `packed-refs` and the branch
/// HEAD names (its folder while the branch lives only in `packed-refs`). Only existing paths
/// (cargo reruns a build script on every build when a path it watches does not exist). A
/// worktree's `.git` is a file; then nothing is watched and the revision is refreshed whenever
/// the build script reruns for another reason.
pub fn watched_files(dir: &Path) -> Vec<PathBuf> {
    let git = dir.join(".git");
    if !git.is_dir() {
        return Vec::new();
    }
    let mut files = vec![git.join("HEAD"), git.join("packed-refs")];
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            let branch = git.join(reference);
            if !branch.is_file() {
                files.extend(branch.parent().map(Path::to_path_buf));
            }
            files.push(branch);
        }
    }
    files.retain(|f| f.exists());
    files
}
