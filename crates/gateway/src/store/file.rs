//! The store's files on disk, checked before redb sees them: the data dir (0700) and the store
//! file (0600), tightened if looser; the `STORE` marker that says a store was created here, so
//! that a missing or empty store file is refused instead of silently starting empty; redb's
//! file header (magic, size) checked up front; and redb's open guarded against panics, so a
//! damaged file is a [`StoreError::Open`] naming the file and the way out, never a crash.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

use super::StoreError;

/// The marker file in the data dir: written once the store file was first created, so a store
/// file that goes missing or empty later is noticed.
pub const MARKER_NAME: &str = "STORE";
/// What to do about a damaged store file.
pub(super) const RECOVER: &str =
    "restore it from a backup, or move it aside to start with an empty store";

const MARKER_TEXT: &str = "whipgate created its store (whipgate.redb) in this directory. While \
this file exists, a missing or empty whipgate.redb is an error, not a new store: restore \
whipgate.redb from a backup, or delete this file to start with an empty store.\n";

/// redb's file header: magic number, then the layout (offsets of redb 2.x's `header.rs`).
const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
const HEADER_LEN: usize = 320;
const PAGE_SIZE_AT: usize = 12;
const REGION_HEADER_PAGES_AT: usize = 16;
const REGION_MAX_DATA_PAGES_AT: usize = 20;
const FULL_REGIONS_AT: usize = 24;
const TRAILING_REGION_PAGES_AT: usize = 28;

/// Whether the store file existed or was just created (empty, 0600).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// A store file with a plausible header: open it.
    Existing,
    /// A new data dir (or one that never had a store): redb initialises the empty file.
    Created,
}

/// Makes `dir` (0700) and checks or creates the store file `path` in it (0600), following
/// the marker rule. Existing looser permissions are tightened (logged at info).
pub(super) fn prepare(dir: &Path, path: &Path) -> Result<Found, StoreError> {
    let err = |detail: String| StoreError::Open {
        path: path.display().to_string(),
        detail,
    };
    data_dir(dir).map_err(|e| StoreError::Open {
        path: dir.display().to_string(),
        detail: format!("preparing the data dir: {e}"),
    })?;
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(err("not a regular file".into())),
        Ok(meta) if meta.len() == 0 => Err(err(format!(
            "the store file is empty (0 bytes): its registrations and tokens are gone. Restore \
             it from a backup; if this data dir is new and its first start was interrupted, \
             delete {} (and {} if present) to start with an empty store",
            path.display(),
            MARKER_NAME
        ))),
        Ok(meta) => {
            tighten(path, 0o600, "store file").map_err(|e| err(e.to_string()))?;
            check_header(path, meta.len())?;
            Ok(Found::Existing)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if dir.join(MARKER_NAME).exists() {
                return Err(err(format!(
                    "the store file is missing, but {} in the data dir says a store was \
                     created here: restore it from a backup, or delete {} to start with an \
                     empty store",
                    MARKER_NAME,
                    dir.join(MARKER_NAME).display()
                )));
            }
            create_private(path).map_err(|e| err(format!("creating the store file: {e}")))?;
            Ok(Found::Created)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Writes the marker once the store file holds a store (absent marker only; 0600, synced).
pub(super) fn mark(dir: &Path) -> Result<(), StoreError> {
    let marker = dir.join(MARKER_NAME);
    if marker.exists() {
        return Ok(());
    }
    let write = || -> io::Result<()> {
        let mut file = create_private(&marker)?;
        file.write_all(MARKER_TEXT.as_bytes())?;
        file.sync_all()?;
        // The marker's directory entry must be durable too.
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| StoreError::Open {
        path: marker.display().to_string(),
        detail: format!("writing the store marker: {e}"),
    })
}

/// Runs redb's open (or anything touching the file at open) with panics turned into errors:
/// redb asserts on some damaged files. The default panic hook is silenced meanwhile, so a
/// caught panic prints nothing (a panic on another thread in that window is not printed
/// either; it still unwinds as usual).
pub(super) fn guarded<T>(
    path: &Path,
    open: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open));
    std::panic::set_hook(previous);
    outcome.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "an internal check failed".into());
        Err(StoreError::Open {
            path: path.display().to_string(),
            detail: format!(
                "the store file is damaged (redb: {}): {RECOVER}",
                what.replace('\n', " ")
            ),
        })
    })
}

/// Creates `dir` (and missing parents) 0700, or tightens an existing one.
fn data_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => tighten(dir, 0o700, "data dir"),
        Ok(_) => Err(io::Error::other("exists and is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut builder = DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            builder.mode(0o700);
            builder.create(dir)
        }
        Err(e) => Err(e),
    }
}

/// Takes group and other permissions away from `path` if it has any (`mode`: what it gets).
#[cfg(unix)]
fn tighten(path: &Path, mode: u32, what: &str) -> io::Result<()> {
    let current = fs::metadata(path)?.permissions().mode() & 0o7777;
    if current & 0o077 == 0 {
        return Ok(());
    }
    if current & 0o1000 != 0 {
        // A sticky shared directory (/tmp) as the data dir: not ours to lock down.
        tracing::warn!(
            path = %path.display(),
            mode = format!("{current:o}"),
            "the {what} is a shared sticky directory: not tightening it; use a data dir of its own"
        );
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    tracing::info!(
        path = %path.display(),
        from = format!("{current:o}"),
        to = format!("{mode:o}"),
        "tightened the permissions of the {what}"
    );
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path, _mode: u32, _what: &str) -> io::Result<()> {
    Ok(())
}

/// Creates a new file readable by its owner only.
fn create_private(path: &Path) -> io::Result<fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)
}

/// Checks what redb would assert on: its magic number, a header, and a file at least as long
/// as the layout its header describes. A failure is [`StoreError::Open`] of `path`.
fn check_header(path: &Path, len: u64) -> Result<(), StoreError> {
    let damaged = |detail: String| StoreError::Open {
        path: path.display().to_string(),
        detail,
    };
    let mut header = [0u8; HEADER_LEN];
    let read = fs::File::open(path).and_then(|mut f| f.read_exact(&mut header));
    if len < HEADER_LEN as u64 || read.is_err() {
        return Err(damaged(format!(
            "the store file is truncated ({len} bytes, shorter than a store header): {RECOVER}"
        )));
    }
    if header[..MAGIC.len()] != MAGIC {
        return Err(damaged(format!(
            "not a whipgate store (no redb header), or damaged: {RECOVER}"
        )));
    }
    let expected = layout_len(&header).ok_or_else(|| {
        damaged(format!(
            "the store file's header is damaged (impossible layout): {RECOVER}"
        ))
    })?;
    if len < expected {
        return Err(damaged(format!(
            "the store file is truncated ({len} bytes, its header says {expected}): {RECOVER}"
        )));
    }
    Ok(())
}

/// The file length redb's header implies: one header page, then the full regions and the
/// trailing partial one, each region its header pages plus its data pages.
fn layout_len(header: &[u8; HEADER_LEN]) -> Option<u64> {
    let at = |offset: usize| -> Option<u64> {
        let bytes = header.get(offset..offset + 4)?.try_into().ok()?;
        Some(u64::from(u32::from_le_bytes(bytes)))
    };
    let page = at(PAGE_SIZE_AT)?;
    let (region_header, max_data) = (at(REGION_HEADER_PAGES_AT)?, at(REGION_MAX_DATA_PAGES_AT)?);
    let (full, trailing) = (at(FULL_REGIONS_AT)?, at(TRAILING_REGION_PAGES_AT)?);
    if page < HEADER_LEN as u64 || !page.is_power_of_two() || (full == 0 && trailing == 0) {
        return None;
    }
    let full_pages = full.checked_mul(region_header.checked_add(max_data)?)?;
    let trailing_pages = if trailing > 0 {
        region_header.checked_add(trailing)?
    } else {
        0
    };
    full_pages
        .checked_add(trailing_pages)?
        .checked_add(1)?
        .checked_mul(page)
}
