//! The identity algorithms run as.

use crate::error::RunnerError;
use nix::unistd::{Gid, Uid, User};

/// Who algorithms run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUser {
    /// The user's name (or `uid N` when it has none).
    pub name: String,
    /// Its uid.
    pub uid: Uid,
    /// Its primary gid, the only group algorithms keep.
    pub gid: Gid,
    /// True when the runner is root and switches to this user for every
    /// algorithm (and clears supplementary groups); false when the runner is
    /// not root and algorithms run as the runner's own user.
    pub switch: bool,
}

impl RunUser {
    /// Resolves the run user: `name` from the user database when the runner
    /// is root (refusing uid 0), the runner's own user otherwise.
    pub fn resolve(name: &str) -> Result<Self, RunnerError> {
        if Uid::effective().is_root() {
            let user = User::from_name(name)
                .map_err(|source| RunnerError::UserLookup {
                    name: name.to_owned(),
                    source,
                })?
                .ok_or_else(|| RunnerError::UserNotFound(name.to_owned()))?;
            if user.uid.is_root() {
                return Err(RunnerError::RunUserIsRoot(name.to_owned()));
            }
            Ok(Self {
                name: user.name,
                uid: user.uid,
                gid: user.gid,
                switch: true,
            })
        } else {
            let uid = Uid::effective();
            let gid = nix::unistd::getegid();
            let own = User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {uid}"), |u| u.name);
            tracing::info!(
                configured = name,
                user = own,
                "the runner is not root: algorithms run as the runner's own user"
            );
            Ok(Self {
                name: own,
                uid,
                gid,
                switch: false,
            })
        }
    }
}
