//! Copying, owning and removing directory trees, durably: what the
//! installer does to release directories, backups and the data directory.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Creates `dir` (and missing parents, 0755) with `mode`, owned by `owner`,
/// unless it exists; an existing one is given that mode and owner.
pub fn ensure_dir(dir: &Path, mode: u32, owner: (u32, u32)) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).with_context(|| cannot("create", parent))?;
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e).with_context(|| cannot("create", dir)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).with_context(|| cannot("set the mode of", dir))?;
    std::os::unix::fs::chown(dir, Some(owner.0), Some(owner.1)).with_context(|| cannot("set the owner of", dir))
}

/// Writes `bytes` to `path` with `mode`, owned by root, through a temporary
/// name and a rename: a reader sees the old file or the new, never half.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    write_from(path, &mut &bytes[..], mode)
}

/// Like [`write_file`], with the bytes streamed from `source` (a model
/// bundle may be larger than memory).
pub fn write_from(path: &Path, source: &mut dyn io::Read, mode: u32) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let written = (|| -> io::Result<()> {
        let mut file = fs::File::create(&partial)?;
        io::copy(source, &mut file)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&partial);
        return Err(e).with_context(|| cannot("write", path));
    }
    fs::rename(&partial, path).with_context(|| cannot("write", path))?;
    sync_parent(path)
}

/// Points the symbolic link `link` at `target`, replacing what it pointed
/// at in one rename.
pub fn switch_link(link: &Path, target: &Path) -> anyhow::Result<()> {
    let partial = link.with_extension("partial");
    let _ = fs::remove_file(&partial);
    std::os::unix::fs::symlink(target, &partial).with_context(|| cannot("link", link))?;
    fs::rename(&partial, link).with_context(|| cannot("switch", link))?;
    sync_parent(link)
}

/// Makes a rename or a new entry in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> anyhow::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    fs::File::open(parent).and_then(|d| d.sync_all()).with_context(|| cannot("sync", parent))
}

/// The bytes of every regular file under `dir`.
pub fn size_of(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    walk(dir, &mut |_, meta| {
        if meta.is_file() {
            total += meta.len();
        }
        Ok(())
    })?;
    Ok(total)
}

/// Copies the tree at `from` to `to` (which must not exist): modes, owners
/// and links as they are, every file synced before it counts as copied.
/// `progress` hears the bytes copied so far.
pub fn copy(from: &Path, to: &Path, progress: &mut dyn FnMut(u64)) -> anyhow::Result<()> {
    let mut done = 0;
    let mut copy_one = |path: &Path, meta: &fs::Metadata| -> anyhow::Result<()> {
        let relative = path.strip_prefix(from).unwrap_or(path);
        let target = to.join(relative);
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::DirBuilder::new()
                .mode(meta.mode() & 0o7777)
                .create(&target)
                .with_context(|| cannot("create", &target))?;
        } else if kind.is_file() {
            let mut source = fs::File::open(path).with_context(|| cannot("read", path))?;
            let mut copy = fs::File::create(&target).with_context(|| cannot("write", &target))?;
            done += io::copy(&mut source, &mut copy).with_context(|| cannot("copy", path))?;
            copy.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            copy.sync_all().with_context(|| cannot("sync", &target))?;
            progress(done);
        } else if kind.is_symlink() {
            let points_at = fs::read_link(path).with_context(|| cannot("read", path))?;
            std::os::unix::fs::symlink(points_at, &target).with_context(|| cannot("link", &target))?;
        } else {
            // Sockets and fifos are made afresh by whoever serves them.
            return Ok(());
        }
        std::os::unix::fs::lchown(&target, Some(meta.uid()), Some(meta.gid()))
            .with_context(|| cannot("set the owner of", &target))
    };
    walk(from, &mut copy_one)?;
    // Directories last: their modes may forbid writing into them.
    walk(to, &mut |path, meta| {
        if meta.is_dir() {
            fs::File::open(path).and_then(|d| d.sync_all()).with_context(|| cannot("sync", path))?;
        }
        Ok(())
    })?;
    sync_parent(to)
}

/// Gives everything under `dir` (and `dir`) to `owner`: after the
/// installer (root) opened a store, any file it made belongs to the service.
pub fn own(dir: &Path, owner: (u32, u32)) -> anyhow::Result<()> {
    walk(dir, &mut |path, _| {
        std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)).with_context(|| cannot("set the owner of", path))
    })
}

/// Removes `path` whatever it is (a tree, a file, a link); absent is fine.
pub fn remove(path: &Path) -> anyhow::Result<bool> {
    let removed = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| cannot("inspect", path)),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    removed.with_context(|| cannot("remove", path))?;
    sync_parent(path)?;
    Ok(true)
}

/// Calls `visit` on `dir` and then everything under it, parents before
/// children; links are not followed.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &fs::Metadata) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(dir).with_context(|| cannot("inspect", dir))?;
    visit(dir, &meta)?;
    if meta.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .with_context(|| cannot("list", dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| cannot("list", dir))?;
        entries.sort();
        for entry in entries {
            walk(&entry, visit)?;
        }
    }
    Ok(())
}

fn cannot(what: &str, path: &Path) -> String {
    format!("cannot {what} {}", path.display())
}
