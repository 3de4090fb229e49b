//! Test support (feature `testing`): an in-memory redb backend that knows
//! what is durable, so crash tests and the simulator can cut power at any
//! sync and re-open what a real disk would hold.
//!
//! The backend keeps a *live* image (every write so far) and a *durable*
//! image (the live image as of the last completed `sync_data`). Writes since
//! the last sync are kept as a log and applied to the durable image when the
//! next sync completes, so a sync costs the bytes written, not the file size.

use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

#[derive(Debug, Default)]
struct Images {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last completed sync: (offset, bytes) or a new length.
    unsynced: Vec<Pending>,
    syncs: u64,
    crash_at: Option<u64>,
    crashed: bool,
}

#[derive(Debug)]
enum Pending {
    Write(usize, Vec<u8>),
    SetLen(usize),
}

/// An in-memory redb backend with a live and a durable image; cloning shares
/// the images, so a test keeps a handle while the store owns another.
#[derive(Debug, Clone, Default)]
pub struct CrashBackend(Arc<Mutex<Images>>);

fn power_loss() -> std::io::Error {
    std::io::Error::other("simulated power loss")
}

fn write_at(buf: &mut Vec<u8>, offset: usize, data: &[u8]) {
    if buf.len() < offset + data.len() {
        buf.resize(offset + data.len(), 0);
    }
    buf[offset..offset + data.len()].copy_from_slice(data);
}

impl CrashBackend {
    /// A backend whose live and durable images both start as `image` (a
    /// re-open after power loss starts from the durable image).
    pub fn from_image(image: Vec<u8>) -> CrashBackend {
        let b = CrashBackend::default();
        {
            let mut g = b.lock();
            g.live = image.clone();
            g.durable = image;
        }
        b
    }

    fn lock(&self) -> MutexGuard<'_, Images> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What survives power loss now.
    pub fn durable_image(&self) -> Vec<u8> {
        self.lock().durable.clone()
    }

    /// Completed syncs so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Cuts power at the `n`th sync from now (1 = the next one): that sync
    /// fails and every later call fails, as if the machine stopped.
    pub fn crash_at_sync(&self, n: u64) {
        let mut g = self.lock();
        g.crash_at = Some(g.syncs + n);
    }

    /// Cancels a power cut armed by [`CrashBackend::crash_at_sync`] that has
    /// not happened yet.
    pub fn disarm(&self) {
        self.lock().crash_at = None;
    }

    /// Whether a power cut is armed and has not happened yet.
    pub fn armed(&self) -> bool {
        let g = self.lock();
        g.crash_at.is_some_and(|k| k > g.syncs)
    }

    /// Cuts power now: every later call fails.
    pub fn crash_now(&self) {
        self.lock().crashed = true;
    }

    /// Whether power was cut.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Flips `mask` into every occurrence of `needle`, at `needle`-relative
    /// offset `at`, in both images (bit rot at rest). Returns how many
    /// occurrences were changed.
    pub fn rot(&self, needle: &[u8], at: usize, mask: u8) -> usize {
        let mut g = self.lock();
        let g = &mut *g;
        let mut hits = 0;
        for img in [&mut g.live, &mut g.durable] {
            hits += rot_in(img, needle, at, mask);
        }
        for p in &mut g.unsynced {
            if let Pending::Write(_, data) = p {
                rot_in(data, needle, at, mask);
            }
        }
        hits
    }
}

fn rot_in(img: &mut [u8], needle: &[u8], at: usize, mask: u8) -> usize {
    if needle.is_empty() || at >= needle.len() {
        return 0;
    }
    let mut hits = 0;
    let mut i = 0;
    while i + needle.len() <= img.len() {
        if &img[i..i + needle.len()] == needle {
            img[i + at] ^= mask;
            hits += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    hits
}

impl StorageBackend for CrashBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        let g = self.lock();
        if g.crashed {
            return Err(power_loss());
        }
        Ok(g.live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let g = self.lock();
        if g.crashed {
            return Err(power_loss());
        }
        let o = offset as usize;
        let src = g
            .live
            .get(o..o + out.len())
            .ok_or_else(|| std::io::Error::other("read past end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut g = self.lock();
        if g.crashed {
            return Err(power_loss());
        }
        g.live.resize(len as usize, 0);
        g.unsynced.push(Pending::SetLen(len as usize));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut g = self.lock();
        if g.crashed {
            return Err(power_loss());
        }
        g.syncs += 1;
        if g.crash_at == Some(g.syncs) {
            g.crashed = true;
            return Err(power_loss());
        }
        let pending = std::mem::take(&mut g.unsynced);
        for p in pending {
            match p {
                Pending::Write(o, data) => write_at(&mut g.durable, o, &data),
                Pending::SetLen(n) => g.durable.resize(n, 0),
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut g = self.lock();
        if g.crashed {
            return Err(power_loss());
        }
        let o = offset as usize;
        write_at(&mut g.live, o, data);
        g.unsynced.push(Pending::Write(o, data.to_vec()));
        Ok(())
    }
}
