//! The static file server's blocking half: a small pool of `aperture-static` threads that do
//! every file-system call a worker core must not make (path resolution, symlink checks, `open`,
//! `fstat`, and `pread` for cores on the epoll driver), fed through one bounded queue and
//! answering through one-shot channels. A core never waits on this pool synchronously: it
//! `try_send`s (a full queue is a 503, never a blocked core) and awaits the reply with a
//! deadline. Owns nothing else; it must not touch sockets or core state.
//!
//! Opening is race-free against a root that changes underneath: the path is canonicalised
//! (symlinks resolved), checked to lie under the canonical root, then opened relative to the
//! root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a symlink planted between the
//! check and the open fails the open instead of leaving the root. Where `openat2` is missing
//! (Linux before 5.6, or a seccomp filter that refuses it) the canonical path is opened with
//! `O_NOFOLLOW`, which protects the last component only.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use futures_channel::oneshot;

/// Threads in the pool: two, so one slow disk read does not hold every other request.
const THREADS: usize = 2;

/// Jobs queued at most (all cores together); past this a request gets 503.
const QUEUE: usize = 1024;

/// A file found and opened under the root.
#[derive(Debug)]
pub struct Opened {
    /// Open for reading.
    pub file: File,
    /// Its size when opened (what is served, even if it grows meanwhile).
    pub len: u64,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: (i64, u32),
    /// The directory's `index.html` was opened for a directory request.
    pub index: bool,
}

/// What a path names under the root.
#[derive(Debug)]
pub enum Found {
    /// A regular file, opened.
    File(Opened),
    /// A directory asked for without its trailing slash (Go's file server redirects).
    AddSlash,
    /// Nothing servable: missing, outside the root, not a regular file, or unreadable.
    NotFound,
}

/// Why the pool could not answer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The queue is full.
    #[error("the static file queue is full")]
    Busy,
    /// The pool is gone (its threads could not start, or died).
    #[error("the static file threads are gone")]
    Gone,
}

enum Job {
    Open {
        root: Arc<Path>,
        rel: PathBuf,
        dir: bool,
        reply: oneshot::Sender<Found>,
    },
    Read {
        file: Arc<File>,
        offset: u64,
        want: usize,
        buf: Vec<u8>,
        reply: oneshot::Sender<ReadDone>,
    },
}

/// A read's outcome: the count (or error) and the buffer, grown by the count.
pub type ReadDone = (io::Result<usize>, Vec<u8>);

struct Pool {
    jobs: SyncSender<Job>,
}

static POOL: OnceLock<Option<Pool>> = OnceLock::new();

/// Starts the pool (once per process; later calls do nothing). Called where the routing table
/// is built, off the cores, so no core ever spawns a thread.
pub fn start() {
    pool();
}

fn pool() -> Option<&'static Pool> {
    POOL.get_or_init(|| {
        let (jobs, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("aperture-static-{i}"))
                .spawn(move || run(&rx));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!("cannot start a static file thread: {e}"),
            }
        }
        (started > 0).then_some(Pool { jobs })
    })
    .as_ref()
}

fn run(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A bug in one job must not take the pool down with it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(job)));
    }
}

fn handle(job: Job) {
    match job {
        Job::Open {
            root,
            rel,
            dir,
            reply,
        } => {
            let _ = reply.send(find(&root, &rel, dir));
        }
        Job::Read {
            file,
            offset,
            want,
            mut buf,
            reply,
        } => {
            let start = buf.len();
            buf.resize(start + want, 0);
            let res = file.read_at(&mut buf[start..], offset);
            buf.truncate(start + *res.as_ref().unwrap_or(&0));
            let _ = reply.send((res, buf));
        }
    }
}

/// Queues a job without waiting; a refused job comes back with the reason.
fn submit(job: Job) -> Result<(), (PoolError, Job)> {
    let Some(pool) = pool() else {
        return Err((PoolError::Gone, job));
    };
    pool.jobs.try_send(job).map_err(|e| match e {
        TrySendError::Full(job) => (PoolError::Busy, job),
        TrySendError::Disconnected(job) => (PoolError::Gone, job),
    })
}

/// Asks the pool to find `rel` under `root` (`dir`: the request ended with `/`). The reply
/// comes through the returned receiver; a dropped receiver just discards it.
pub fn open(
    root: Arc<Path>,
    rel: PathBuf,
    dir: bool,
) -> Result<oneshot::Receiver<Found>, PoolError> {
    let (reply, rx) = oneshot::channel();
    submit(Job::Open {
        root,
        rel,
        dir,
        reply,
    })
    .map_err(|(e, _)| e)?;
    Ok(rx)
}

/// Asks the pool to read up to `want` bytes of `file` at `offset`, appended to `buf`, which
/// comes back with the count (or, when the job is refused, with the reason).
pub fn read(
    file: Arc<File>,
    offset: u64,
    want: usize,
    buf: Vec<u8>,
) -> Result<oneshot::Receiver<ReadDone>, (PoolError, Vec<u8>)> {
    let (reply, rx) = oneshot::channel();
    let job = Job::Read {
        file,
        offset,
        want,
        buf,
        reply,
    };
    match submit(job) {
        Ok(()) => Ok(rx),
        Err((e, Job::Read { buf, .. })) => Err((e, buf)),
        Err((e, Job::Open { .. })) => Err((e, Vec::new())),
    }
}

/// Resolves `rel` under `root` (both as the rules made them: `root` canonical, `rel` relative
/// without `..`) to a regular file, following Go's file server: a directory serves its
/// `index.html` when asked for with a trailing slash and is redirected to it otherwise.
/// Blocking: called on a pool thread only (and by tests).
pub fn find(root: &Path, rel: &Path, dir: bool) -> Found {
    let Some(real) = beneath(root, &root.join(rel)) else {
        return Found::NotFound;
    };
    let Ok(meta) = std::fs::metadata(&real) else {
        return Found::NotFound;
    };
    let (target, index) = if meta.is_dir() {
        if !dir && !rel.as_os_str().is_empty() {
            return Found::AddSlash;
        }
        match beneath(root, &real.join("index.html")) {
            Some(index) => (index, true),
            None => return Found::NotFound,
        }
    } else if dir {
        // `/file.txt/`: a file is not a directory.
        return Found::NotFound;
    } else {
        (real, false)
    };
    let Ok(under) = target.strip_prefix(root) else {
        return Found::NotFound;
    };
    let file = match open_beneath(root, under) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(path = %target.display(), "static file not opened: {e}");
            return Found::NotFound;
        }
    };
    match file.metadata() {
        Ok(m) if m.is_file() => Found::File(Opened {
            len: m.len(),
            mtime: (m.mtime(), u32::try_from(m.mtime_nsec()).unwrap_or(0)),
            file,
            index,
        }),
        _ => Found::NotFound,
    }
}

/// The canonical form of `path` when it exists and lies under `root` (a symlink that leads
/// out of the root is not found, whatever it points at).
fn beneath(root: &Path, path: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(path).ok()?;
    if real.starts_with(root) {
        Some(real)
    } else {
        tracing::debug!(path = %path.display(), "static path resolves outside staticroot; not served");
        None
    }
}

/// Whether `openat2` answered ENOSYS/EPERM once: the fallback is used from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// `struct open_how` (linux/openat2.h); libc's is `non_exhaustive`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `rel` (symlink-free, relative) under `root` for reading, never following a symlink
/// and never leaving `root`. `O_NONBLOCK` so a FIFO planted in the root cannot hold the thread
/// (the caller serves regular files only).
fn open_beneath(root: &Path, rel: &Path) -> io::Result<File> {
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(root)?;
        let name = CString::new(rel.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let how = OpenHow {
            flags: flags as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH
                | libc::RESOLVE_NO_SYMLINKS
                | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: `name` is a NUL-terminated string and `how` a live `open_how` of the size
        // passed; the kernel reads both during the call only and returns a new descriptor
        // that nothing else owns.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                std::os::fd::AsRawFd::as_raw_fd(&dir),
                name.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a descriptor the kernel just opened for us, owned by nobody else.
            let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            return Ok(File::from(owned));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EPERM) => {
                tracing::warn!("openat2 is unavailable ({err}); static files are opened with O_NOFOLLOW on the canonical path instead");
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            _ => return Err(err),
        }
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NOFOLLOW)
        .open(root.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("a.txt"), "aaa").unwrap();
        std::fs::write(root.join("sub/deeper/index.html"), "deep").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink("../secret.txt", root.join("out.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("abs-out.txt"))
            .unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("in.txt")).unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("abs-in.txt")).unwrap();
        std::os::unix::fs::symlink("..", root.join("up")).unwrap();
        std::fs::create_dir(root.join("noindex")).unwrap();
        let root = std::fs::canonicalize(root).unwrap();
        (dir, root)
    }

    fn body(found: Found) -> Option<String> {
        match found {
            Found::File(o) => {
                let mut s = String::new();
                io::Read::read_to_string(&mut &o.file, &mut s).unwrap();
                assert_eq!(o.len as usize, s.len());
                Some(s)
            }
            _ => None,
        }
    }

    #[test]
    fn finds_files_indexes_and_redirects_like_go() {
        let (_dir, root) = site();
        let find = |rel: &str, dir: bool| find(&root, Path::new(rel), dir);
        assert_eq!(body(find("", true)).as_deref(), Some("home"));
        assert_eq!(body(find("a.txt", false)).as_deref(), Some("aaa"));
        assert_eq!(body(find("sub/deeper", true)).as_deref(), Some("deep"));
        assert!(matches!(find("sub/deeper", false), Found::AddSlash));
        assert!(matches!(find("noindex", true), Found::NotFound));
        assert!(matches!(find("a.txt", true), Found::NotFound));
        assert!(matches!(find("missing", false), Found::NotFound));
        // Symlinks inside the root are followed; out of it, never.
        assert_eq!(body(find("in.txt", false)).as_deref(), Some("aaa"));
        assert_eq!(body(find("abs-in.txt", false)).as_deref(), Some("aaa"));
        assert!(matches!(find("out.txt", false), Found::NotFound));
        assert!(matches!(find("abs-out.txt", false), Found::NotFound));
        assert!(matches!(find("up/secret.txt", false), Found::NotFound));
        assert!(matches!(find("up", true), Found::NotFound));
    }

    #[test]
    fn open_beneath_refuses_symlinks_and_escapes() {
        let (_dir, root) = site();
        assert!(open_beneath(&root, Path::new("a.txt")).is_ok());
        assert!(open_beneath(&root, Path::new("in.txt")).is_err());
        assert!(open_beneath(&root, Path::new("out.txt")).is_err());
        assert!(open_beneath(&root, Path::new("../secret.txt")).is_err());
    }

    #[test]
    fn the_pool_opens_and_reads() {
        let (_dir, root) = site();
        let root: Arc<Path> = root.into();
        let rx = open(root, "a.txt".into(), false).unwrap();
        let Found::File(opened) = wait_reply(rx) else {
            panic!("a.txt not found");
        };
        let rx = read(Arc::new(opened.file), 1, 10, b"x".to_vec()).unwrap();
        let (n, buf) = wait_reply(rx);
        assert_eq!((n.unwrap(), buf.as_slice()), (2, &b"xaa"[..]));
    }

    /// Waits for a one-shot reply on this (test) thread.
    fn wait_reply<T>(mut rx: oneshot::Receiver<T>) -> T {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(Some(v)) = rx.try_recv() {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "no reply");
            std::thread::yield_now();
        }
    }
}
