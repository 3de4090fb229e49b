//! A small file system of a test's own (tmpfs), to fill a node's disk on
//! purpose and free it again, without touching any other disk. Needs root
//! (CI runs as root); [`Tmpfs::mount`] returns `Skip` otherwise. Unmounted
//! on drop, also when the test fails.

use std::path::Path;
use std::process::Command;

use crate::netns::Skip;

/// A tmpfs mounted on a temporary directory; unmounted and removed on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on a new temporary directory.
    ///
    /// # Errors
    /// `Ok(Err(Skip))` when not root or the mount is refused (a container
    /// without the right); `Err` when the directory cannot be made.
    pub fn mount(mib: u64) -> anyhow::Result<Result<Tmpfs, Skip>> {
        if !crate::netns::is_root() {
            return Ok(Err(Skip(
                "a test file system needs root (CI runs as root)".into(),
            )));
        }
        let dir = tempfile::tempdir()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            return Ok(Err(Skip(format!(
                "cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))));
        }
        Ok(Ok(Tmpfs { dir }))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes it `mib` MiB large (room freed, or taken away).
    ///
    /// # Errors
    /// If `mount -o remount` fails.
    pub fn resize(&self, mib: u64) -> anyhow::Result<()> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.dir.path())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "remount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a node still holding a file open does not keep it mounted.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}
