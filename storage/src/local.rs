//! Local filesystem backend.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

fn io(uri: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let uri = uri.into();
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { uri }
        } else {
            Error::Io { uri, source }
        }
    }
}

pub async fn read(path: &str) -> Result<Vec<u8>> {
    tokio::fs::read(path).await.map_err(io(path))
}

pub(crate) async fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io(dir.display().to_string()))?;
    }
    Ok(())
}

pub(crate) fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

pub async fn write(path: &str, data: &[u8]) -> Result<()> {
    let target = Path::new(path);
    ensure_parent(target).await?;
    let tmp = temp_name(target);
    tokio::fs::write(&tmp, data).await.map_err(io(path))?;
    tokio::fs::rename(&tmp, target).await.map_err(io(path))
}

pub async fn copy(from: &Path, to: &Path) -> Result<()> {
    ensure_parent(to).await?;
    let tmp = temp_name(to);
    tokio::fs::copy(from, &tmp)
        .await
        .map_err(io(from.display().to_string()))?;
    tokio::fs::rename(&tmp, to)
        .await
        .map_err(io(to.display().to_string()))
}

pub async fn list(prefix: &str) -> Result<Vec<String>> {
    let root = PathBuf::from(prefix);
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                out.push(dir.display().to_string());
                continue;
            }
            Err(e) => return Err(io(dir.display().to_string())(e)),
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io(dir.display().to_string()))?
        {
            let path = entry.path();
            let ty = entry
                .file_type()
                .await
                .map_err(io(path.display().to_string()))?;
            if ty.is_dir() {
                stack.push(path);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

pub async fn delete(path: &str) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Removes `dir` and the directories below it if they hold no files.
pub async fn remove_empty_dirs(dir: &str) {
    fn walk(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let dir = PathBuf::from(dir);
    let _ = tokio::task::spawn_blocking(move || walk(&dir)).await;
}
